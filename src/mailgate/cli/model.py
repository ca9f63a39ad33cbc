"""``mailgate model train|eval|list|show|activate|rollback``: the routing model's life cycle.

Labels come from a file in the ``rules eval`` format (one ``{"path": "x.eml", "queue": …,
"tags": […]}`` per line, paths relative to the file) and/or from the store (``--from-store``:
``mailgate messages label`` and ``POST /v1/messages/{id}/label``). ``train`` holds back a
stratified part (fixed seed), reports how the model does on it, then trains on everything and
stores a new, inactive version; ``activate`` makes it route (workers pick it up within
seconds), ``rollback`` returns to the version active before. ``eval`` prints accuracy,
per-queue precision/recall/F1, the confusion matrix and coverage vs accuracy over thresholds,
for a stored version (``--model``) or for a fresh model on a held-out split of the file.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from mailgate.classifier.features import message_text
from mailgate.classifier.model import LinearModel, ModelError, load_model
from mailgate.classifier.train import SEED, Example, TrainError, evaluate, split, train
from mailgate.cli.common import (
    config_option,
    json_option,
    load_cli_config,
    open_store,
    print_json,
    run,
)
from mailgate.cli.rules import _load_labeled
from mailgate.config import Config
from mailgate.pipeline.offline import envelope_from_bytes
from mailgate.store.models import ModelRecord


@click.group("model")
def model_group() -> None:
    """Train, evaluate and activate the routing model ([classifier])."""


tenant_option = click.option(
    "--tenant", default="default", show_default=True, help="Whose labels and model."
)
split_options = [
    click.option(
        "--test-size",
        default=0.25,
        show_default=True,
        type=click.FloatRange(0.05, 0.5),
        help="Share of the labels held back for the evaluation (stratified).",
    ),
    click.option("--seed", default=SEED, show_default=True, help="Seed of the split."),
]


def _split_options(fn: Any) -> Any:
    for opt in reversed(split_options):
        fn = opt(fn)
    return fn


def examples_from_file(cfg: Config, path: Path) -> list[Example]:
    """The labelled files of ``path`` (rules-eval format), parsed as the worker parses mail."""
    out = []
    for _n, eml, queue, tags in _load_labeled(path):
        if queue is None:
            continue
        env, _ = envelope_from_bytes(eml.read_bytes(), cfg)
        subject, body = message_text(env)
        out.append(Example(subject, body, queue, tuple(tags or ()), str(eml)))
    return out


async def examples_from_store(store: Any, tenant: str) -> list[Example]:
    out = []
    for label in await store.list_labels(tenant):
        env = await store.get_envelope(label.msg_id)
        if not env:
            continue  # labelled before it was processed: nothing to read yet
        subject, body = message_text(env)
        out.append(Example(subject, body, label.queue, label.tags, label.msg_id))
    return out


@contextmanager
def progress_bar(enabled: bool) -> Iterator[Any]:
    """A rich status line on stderr (transient), or a no-op without a terminal."""
    if not enabled:
        yield lambda _msg: None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task("starting")
        yield lambda msg: progress.update(task, description=msg)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def print_report(report: dict[str, Any], title: str) -> None:
    click.echo(f"{title}: {report['total']} messages")
    click.echo(f"accuracy              {_fmt(report['accuracy'])}")
    click.echo(
        f"at threshold {report['threshold']:.2f}     coverage {_fmt(report['coverage'])},"
        f" accuracy {_fmt(report['accuracy_at_threshold'])}"
    )
    if report.get("unknown_queues"):
        click.echo(f"queues the model does not know: {', '.join(report['unknown_queues'])}")
    click.echo("")
    click.echo(f"{'queue':<16} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>8}")
    for q, s in report["per_queue"].items():
        click.echo(
            f"{q:<16} {_fmt(s['precision']):>9} {_fmt(s['recall']):>7} {_fmt(s['f1']):>6}"
            f" {s['support']:>8}"
        )
    labels = report["confusion"]["labels"]
    click.echo("")
    click.echo("confusion (rows: expected, columns: predicted)")
    short = [q[:7] for q in labels]
    click.echo(" " * 16 + "".join(f"{s:>8}" for s in short))
    for q, row in zip(labels, report["confusion"]["matrix"], strict=True):
        click.echo(f"{q:<16}" + "".join(f"{n:>8}" for n in row))
    click.echo("")
    click.echo("threshold  coverage  accuracy")
    for point in report["sweep"]:
        if point["threshold"] * 100 % 10 == 0 or point["threshold"] == report["threshold"]:
            click.echo(
                f"{point['threshold']:>9.2f}  {_fmt(point['coverage']):>8}  {_fmt(point['accuracy']):>8}"
            )


def _summary_json(rec: ModelRecord) -> dict[str, Any]:
    return {
        "version": rec.version,
        "tenant": rec.tenant,
        "active": rec.active,
        "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(rec.created_at)),
        "summary": rec.summary,
    }


@model_group.command("train")
@config_option
@click.argument(
    "labels", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--from-store", is_flag=True, help="Use the labels stored with messages too.")
@tenant_option
@_split_options
@click.option("--activate", is_flag=True, help="Route with the new version at once.")
@json_option
def train_cmd(
    config_path: str | None,
    labels: Path | None,
    from_store: bool,
    tenant: str,
    test_size: float,
    seed: int,
    activate: bool,
    as_json: bool,
) -> None:
    """Train on LABELS.jsonl and/or the stored labels; store a new model version."""
    if labels is None and not from_store:
        raise click.UsageError("give LABELS.jsonl, --from-store, or both")
    cfg = load_cli_config(config_path)
    min_examples = cfg.classifier.min_examples

    async def body() -> dict[str, Any]:
        async with open_store(cfg) as store:
            with progress_bar(sys.stderr.isatty() and not as_json) as say:
                say("reading labelled messages")
                examples = examples_from_file(cfg, labels) if labels else []
                if from_store:
                    examples += await examples_from_store(store, tenant)
                say("training on the training part")
                try:
                    part_train, part_test = split(examples, test_size=test_size, seed=seed)
                    trial = train(part_train, min_examples=min_examples, seed=seed, progress=say)
                    say("evaluating on the held-back part")
                    report = evaluate(trial.model, part_test, threshold=cfg.classifier.threshold)
                    say("training on all labels")
                    final = train(
                        examples,
                        min_examples=min_examples,
                        seed=seed,
                        progress=say,
                        info={"tenant": tenant, "trained_at": time.time()},
                    )
                except (TrainError, ValueError) as exc:
                    raise click.ClickException(str(exc)) from None
                summary = {
                    "examples": len(examples),
                    "queues": final.queues,
                    "leftOut": final.left_out,
                    "features": len(final.model.vectorizer),
                    "sources": ([str(labels)] if labels else [])
                    + (["store"] if from_store else []),
                    "heldOut": {
                        "size": len(part_test),
                        "seed": seed,
                        "accuracy": report["accuracy"],
                        "threshold": report["threshold"],
                        "coverage": report["coverage"],
                        "accuracy_at_threshold": report["accuracy_at_threshold"],
                    },
                    "trainSeconds": round(final.seconds, 3),
                }
                say("storing the model")
                version = await store.save_model(tenant, final.model.dumps(), summary)
                if activate:
                    await store.activate_model(version)
        return {
            "version": version,
            "tenant": tenant,
            "active": activate,
            "report": report,
            **summary,
        }

    result = run(body)
    if as_json:
        print_json(result)
        return
    print_report(
        result["report"], f"held-out part ({result['heldOut']['size']} of {result['examples']})"
    )
    click.echo("")
    if result["leftOut"]:
        left = ", ".join(f"{q} ({n})" for q, n in result["leftOut"].items())
        click.echo(f"left out (fewer than {min_examples} labels): {left}")
    state = (
        "active" if result["active"] else f"inactive; `mailgate model activate {result['version']}`"
    )
    click.echo(
        f"model v{result['version']} for tenant {tenant!r}: {result['examples']} labels,"
        f" {len(result['queues'])} queues, {result['features']} features ({state})"
    )


@model_group.command("eval")
@config_option
@click.argument("labels", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--model", "version", type=int, default=None, help="Score this stored version on all of LABELS."
)
@_split_options
@json_option
def eval_cmd(
    config_path: str | None,
    labels: Path,
    version: int | None,
    test_size: float,
    seed: int,
    as_json: bool,
) -> None:
    """Accuracy, per-queue P/R/F1, confusion and a threshold sweep on LABELS.jsonl.

    Without --model a fresh model is trained on a stratified part of LABELS and scored on
    the rest (nothing is stored).
    """
    cfg = load_cli_config(config_path)
    examples = examples_from_file(cfg, labels)
    threshold = cfg.classifier.threshold
    if version is not None:

        async def fetch() -> str:
            async with open_store(cfg) as store:
                rec = await store.get_model(version)
            return rec.data or ""

        try:
            model = load_model(run(fetch))
        except ModelError as exc:
            raise click.ClickException(f"model v{version}: {exc}") from None
        report = evaluate(model, examples, threshold=threshold)
        title = f"model v{version} on {labels}"
    else:
        with progress_bar(sys.stderr.isatty() and not as_json) as say:
            try:
                part_train, part_test = split(examples, test_size=test_size, seed=seed)
                trial = train(
                    part_train, min_examples=cfg.classifier.min_examples, seed=seed, progress=say
                )
            except (TrainError, ValueError) as exc:
                raise click.ClickException(str(exc)) from None
            say("evaluating")
            report = evaluate(trial.model, part_test, threshold=threshold)
        report["split"] = {"train": len(part_train), "test": len(part_test), "seed": seed}
        title = f"held-out part of {labels} ({len(part_test)} of {len(examples)}, seed {seed})"
    if as_json:
        print_json(report)
        return
    print_report(report, title)


@model_group.command("list")
@config_option
@click.option("--tenant", default=None, help="Only this tenant's versions.")
@json_option
def list_cmd(config_path: str | None, tenant: str | None, as_json: bool) -> None:
    """Stored model versions (the active one marked)."""
    cfg = load_cli_config(config_path)

    async def body() -> list[ModelRecord]:
        async with open_store(cfg) as store:
            return await store.list_models(tenant)

    records = run(body)
    if as_json:
        print_json([_summary_json(r) for r in records])
        return
    if not records:
        click.echo("no models (train one with `mailgate model train LABELS.jsonl`)")
    for r in records:
        held = r.summary.get("heldOut") or {}
        click.echo(
            f"{'*' if r.active else ' '} v{r.version:<4} {r.tenant:<12}"
            f" {time.strftime('%Y-%m-%d %H:%M', time.gmtime(r.created_at))}"
            f"  {r.summary.get('examples', '?')} labels  held-out accuracy {_fmt(held.get('accuracy'))}"
        )


@model_group.command("show")
@config_option
@click.argument("version", type=int)
@click.option("--terms", default=8, show_default=True, help="Top weighted terms per queue.")
@json_option
def show_cmd(config_path: str | None, version: int, terms: int, as_json: bool) -> None:
    """One version: how it was trained, and the terms that weigh most for each queue."""
    cfg = load_cli_config(config_path)

    async def body() -> ModelRecord:
        async with open_store(cfg) as store:
            return await store.get_model(version)

    rec = run(body)
    try:
        model: LinearModel = load_model(rec.data or "")
    except ModelError as exc:
        raise click.ClickException(f"model v{version}: {exc}") from None
    top = {q: model.top_terms(q, terms) for q in model.queues}
    if as_json:
        print_json({**_summary_json(rec), "queues": model.queues, "topTerms": top})
        return
    click.echo(
        f"model v{rec.version} (tenant {rec.tenant!r}, {'active' if rec.active else 'inactive'})"
    )
    click.echo(json.dumps(rec.summary, indent=2, ensure_ascii=False))
    for q, words in top.items():
        click.echo(f"{q:<16} {', '.join(words)}")


@model_group.command("activate")
@config_option
@click.argument("version", type=int)
def activate_cmd(config_path: str | None, version: int) -> None:
    """Route with VERSION (its tenant's previous version stays stored)."""
    cfg = load_cli_config(config_path)

    async def body() -> ModelRecord:
        async with open_store(cfg) as store:
            rec = await store.get_model(version)
            try:
                load_model(rec.data or "")
            except ModelError as exc:
                raise click.ClickException(f"model v{version}: {exc}") from None
            return await store.activate_model(version)

    rec = run(body)
    click.echo(f"model v{rec.version} is active for tenant {rec.tenant!r}")
    if not cfg.classifier.enabled:
        click.echo("note: [classifier] enabled = false in this config; the model is not consulted")


@model_group.command("rollback")
@config_option
@tenant_option
def rollback_cmd(config_path: str | None, tenant: str) -> None:
    """Go back to the version that was active before the current one."""
    cfg = load_cli_config(config_path)

    async def body() -> ModelRecord | None:
        async with open_store(cfg) as store:
            return await store.rollback_model(tenant)

    rec = run(body)
    if rec is None:
        click.echo(f"no earlier version: tenant {tenant!r} now routes by rules only")
    else:
        click.echo(f"model v{rec.version} is active again for tenant {tenant!r}")
