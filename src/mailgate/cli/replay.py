"""``mailgate replay``: run the current rules over stored messages and show (or apply) the change.

Each stored envelope (processed or quarantined; ``--since``, ``--tenant`` or explicit ids)
is run through the pipeline again in ``replay`` mode: the message's own dedup and thread rows
are kept, routing is recomputed. ``--dry-run`` prints, per message that would change, the old
and new queue, tags, priority, rule and intent (and quarantine decision) and writes nothing.
Without it the new routing is stored with an audit entry; ``--redeliver`` also publishes a
``message.rerouted`` event to the tenant's targets. Replay never changes a message's state:
a quarantined message leaves quarantine only by ``mailgate quarantine release``. Dead-lettered
messages (processing failed ``pipeline.max_attempts`` times) named by id, or all of them with
``--dead``, go back to the spool and the ingest worker runs them again (Mailman's
``unshunt``). With a terminal on stdout a progress bar shows how far it is. The trained
routing model takes part as in the worker (the tenant's active version); ``--dry-run --model
VERSION`` shows what a stored, not yet active version would change (issue 17).
"""

from __future__ import annotations

import copy
import dataclasses
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

import click

from mailgate.cli.common import (
    config_option,
    json_option,
    load_cli_config,
    open_store,
    print_json,
    run,
)
from mailgate.cli.quarantine import actor_option, default_actor
from mailgate.config import Config, ConfigError, parse_duration
from mailgate.pipeline.runner import PipelineRunner
from mailgate.store.base import Intent, NotFound
from mailgate.store.delivery import PublishIntent

COMPARED = ("queue", "tags", "priority", "rule", "intent", "quarantine", "model")


def parse_since(value: str) -> float:
    """``2026-04-01``, ``2026-04-01T12:00:00Z`` or a duration back from now (``24h``, ``7d``)."""
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?\s*(ms|s|m|h|d)", text):
        return time.time() - parse_duration(text)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            "expected a date (2026-04-01), a UTC time (2026-04-01T12:00:00Z) or a duration (24h, 7d)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def summary(env: dict[str, Any]) -> dict[str, Any]:
    route = env.get("route") or {}
    q = env.get("quarantine")
    return {
        "queue": env.get("queue"),
        "tags": list(env.get("tags") or []),
        "priority": env.get("priority"),
        "rule": route.get("rule") if isinstance(route, dict) else None,
        "intent": env.get("intent"),
        "quarantine": q.get("reason") if isinstance(q, dict) else None,
        "model": _model_summary(route.get("model") if isinstance(route, dict) else None),
    }


def _model_summary(model: Any) -> str | None:
    """``v3 billing 0.91`` (``low`` when under the threshold): the model's part of a route."""
    if not isinstance(model, dict):
        return None
    low = "" if model.get("accepted") else " low"
    return f"v{model.get('version')} {model.get('queue')} {float(model.get('confidence') or 0):.2f}{low}"


def diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, dict[str, Any]]:
    a, b = summary(old), summary(new)
    return {k: {"old": a[k], "new": b[k]} for k in COMPARED if a[k] != b[k]}


def _fmt(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(value) + "]"
    return "-" if value is None else str(value)


async def classify_stages(cfg: Config, store: Any, version: int | None) -> dict[str, Any]:
    """The stages with ``classify`` built against the store's models (issue 17); with a
    ``version``, that stored model routes its tenant's messages as if it were active."""
    from mailgate.classifier.model import ModelError, load_model
    from mailgate.pipeline.lifecycle import Services
    from mailgate.pipeline.stages import registry
    from mailgate.pipeline.stages.classify import ClassifyStage, ModelHolder

    stages: dict[str, Any] = dict(registry())
    if version is None:
        stages["classify"] = ClassifyStage.build(cfg, Services(models=store))
        return stages
    rec = await store.get_model(version)
    try:
        model = load_model(rec.data or "")
    except ModelError as exc:
        raise click.ClickException(f"model v{version}: {exc}") from None
    enabled = dataclasses.replace(cfg.classifier, enabled=True)
    holder = ModelHolder.fixed({rec.tenant: (version, model)})
    stages["classify"] = ClassifyStage(enabled, holder)
    return stages


@click.command("replay")
@config_option
@click.argument("ids", nargs=-1)
@click.option(
    "--since", "since", default=None, help="Messages received since a date or duration (7d)."
)
@click.option("--tenant", default=None, help="Only this tenant's messages.")
@click.option("--dry-run", is_flag=True, help="Print what would change; write nothing.")
@click.option(
    "--redeliver", is_flag=True, help="Publish a message.rerouted event for changed messages."
)
@click.option(
    "--dead",
    "include_dead",
    is_flag=True,
    help="Also put dead-lettered messages back in the spool.",
)
@click.option("--limit", default=100000, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option(
    "--model",
    "model_version",
    type=int,
    default=None,
    help="With --dry-run: route with this stored model version instead of the active one.",
)
@actor_option
@json_option
def replay_cmd(
    config_path: str | None,
    ids: tuple[str, ...],
    since: str | None,
    tenant: str | None,
    dry_run: bool,
    redeliver: bool,
    include_dead: bool,
    limit: int,
    model_version: int | None,
    actor: str | None,
    as_json: bool,
) -> None:
    """Re-run the current rules over stored messages (all, --since, or the given IDS)."""
    cfg = load_cli_config(config_path)
    if model_version is not None and not dry_run:
        raise click.UsageError("--model needs --dry-run (activate the version to route with it)")
    since_ts = parse_since(since) if since else None
    who = actor or default_actor()
    show_progress = sys.stdout.isatty() and not as_json

    async def body() -> dict[str, Any]:
        async with open_store(cfg) as store:
            try:
                stages = await classify_stages(cfg, store, model_version)
                runner = PipelineRunner(cfg, store, stages=stages)
            except ConfigError as exc:
                raise click.ClickException(str(exc)) from None
            targets = await store.list_replayable(
                since=since_ts, ids=ids, tenant=tenant, limit=limit
            )
            dead: list[str] = []
            if ids or include_dead:
                dead = await store.list_dead(since=since_ts, ids=ids, tenant=tenant, limit=limit)
            missing = sorted(set(ids) - set(targets) - set(dead))
            if missing:
                raise NotFound(f"{missing[0]} (no processed envelope to replay)")
            if not dry_run:
                for msg_id in dead:
                    await store.requeue_dead(msg_id, actor=who)
            changes: list[dict[str, Any]] = []
            progress = None
            task = None
            if show_progress:
                from rich.progress import Progress

                progress = Progress(transient=True)
                progress.start()
                task = progress.add_task("replaying", total=len(targets))
            try:
                for msg_id in targets:
                    old = await store.get_envelope(msg_id)
                    new = copy.deepcopy(old)
                    outcome = await runner.process(new, mode="replay")
                    changed = diff(old, new)
                    if changed:
                        changes.append({"id": msg_id, "changes": changed})
                        if not dry_run:
                            intents: list[Intent] = []
                            if redeliver and any(
                                isinstance(i, PublishIntent) for i in outcome.intents
                            ):
                                thread = new.get("thread") or {}
                                intents.append(
                                    PublishIntent(
                                        event_type="message.rerouted",
                                        targets=tuple(outcome.targets),
                                        ordering_key=thread.get("id")
                                        if isinstance(thread, dict)
                                        else None,
                                    )
                                )
                            await store.update_decision(
                                msg_id,
                                new,
                                intents,
                                actor=who,
                                detail={"changes": changed, "redelivered": bool(intents)},
                            )
                    if progress is not None and task is not None:
                        progress.advance(task)
            finally:
                if progress is not None:
                    progress.stop()
        return {
            "examined": len(targets),
            "changed": len(changes),
            "dryRun": dry_run,
            "messages": changes,
            "requeued": dead,
        }

    result = run(body)
    if as_json:
        print_json(result)
        return
    for m in result["messages"]:
        parts = [f"{k} {_fmt(v['old'])} -> {_fmt(v['new'])}" for k, v in m["changes"].items()]
        click.echo(f"{m['id']}  " + "  ".join(parts))
    for msg_id in result["requeued"]:
        click.echo(f"{msg_id}  dead -> " + ("would be requeued" if dry_run else "requeued"))
    verb = "would change" if dry_run else "changed"
    click.echo(f"{result['examined']} messages examined, {result['changed']} {verb}")
