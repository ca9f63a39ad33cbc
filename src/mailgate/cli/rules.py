"""``mailgate rules test FILE.eml`` and ``mailgate rules eval LABELED.jsonl``: rule tools.

``test`` runs the whole pipeline on one file without storing or sending anything and prints
the stage order with each stage's verdict and reasons, every rule's hit or miss, and the final
route (modelled on ``haraka -o`` and ``salmon routes --test``). ``eval`` runs a labeled set —
one JSON object per line: ``{"path": "x.eml", "queue": "billing", "tags": ["billing"]}``,
paths relative to the JSONL file — and prints precision and recall per queue (and per tag) and
every misrouted case, so a rule change can be judged before it ships.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from mailgate.cli.common import config_option, json_option, load_cli_config, print_json
from mailgate.config import Config, ConfigError
from mailgate.envelope import Envelope
from mailgate.pipeline.offline import run_file
from mailgate.pipeline.runner import Outcome, PipelineRunner

PIPELINE_FIELDS = (
    "intent",
    "queue",
    "tags",
    "priority",
    "route",
    "entities",
    "thread",
    "quarantine",
)


@click.group("rules")
def rules_group() -> None:
    """Try routing rules on files before they meet real mail."""


def _runner(cfg: Config) -> PipelineRunner:
    from mailgate.pipeline.offline import MemoryPorts

    try:
        return PipelineRunner(cfg, MemoryPorts())
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def decision_json(env: Envelope, outcome: Outcome) -> dict[str, Any]:
    out: dict[str, Any] = {k: env.get(k) for k in PIPELINE_FIELDS}
    out["state"] = outcome.state
    out["targets"] = list(outcome.targets)
    out["reply"] = outcome.reply
    return out


@rules_group.command("test")
@config_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--rcpt", "rcpt", multiple=True, help="Recipient (RCPT TO); default: To/Cc in our domains."
)
@click.option("--tenant", default=None, help="Tenant (default: from the recipient domain).")
@json_option
def test_cmd(
    config_path: str | None, file: Path, rcpt: tuple[str, ...], tenant: str | None, as_json: bool
) -> None:
    """Show the decision for FILE and its reasons; stores and sends nothing."""
    cfg = load_cli_config(config_path)
    runner = _runner(cfg)
    raw = file.read_bytes()
    env, outcome = asyncio.run(run_file(raw, cfg, rcpt=rcpt, tenant=tenant, runner=runner))
    if as_json:
        print_json(
            {"file": str(file), "decision": decision_json(env, outcome), **outcome.explain()}
        )
        return
    _print_test(file, env, outcome)


def _print_test(file: Path, env: Envelope, outcome: Outcome) -> None:
    sender = (env.get("from") or {}).get("email") if isinstance(env.get("from"), dict) else None
    click.echo(f"file      {file}")
    click.echo(f"from      {sender or '-'}   subject {env.get('subject')!r}")
    click.echo(f"tenant    {env.get('tenant')}   recipients {', '.join(env['envelope']['rcptTo'])}")
    click.echo("")
    click.echo("stages")
    for r in outcome.results:
        click.echo(f"  {r.stage:<11} {r.verdict:<10} {'; '.join(r.reasons)}")
    click.echo("")
    click.echo("rules")
    if not outcome.hits:
        click.echo("  (no rules configured)")
    for h in outcome.hits:
        if h.skipped:
            click.echo(f"  -  {h.rule.name:<20} skipped: {h.skipped}")
        elif h.matched:
            click.echo(
                f"  +  {h.rule.name:<20} {'; '.join(h.reasons)}  => {h.rule.actions.describe()}"
            )
        else:
            click.echo(f"  x  {h.rule.name:<20} no match: {h.rule.condition.describe()}")
    route = env.get("route") or {}
    click.echo("")
    click.echo(
        f"decision  queue={env.get('queue')} tags={env.get('tags')} priority={env.get('priority')}"
        f" rule={route.get('rule')} confidence={route.get('confidence')}"
    )
    click.echo(f"intent    {env.get('intent')}")
    thread = env.get("thread") or {}
    click.echo(
        f"thread    {thread.get('matchedBy')} {thread.get('id')} ticket={thread.get('ticket')}"
    )
    click.echo(f"entities  {json.dumps(env.get('entities') or {}, ensure_ascii=False)}")
    q = env.get("quarantine")
    click.echo(f"state     {outcome.state}" + (f" ({q['reason']}: {q['detail']})" if q else ""))
    click.echo(f"targets   {', '.join(outcome.targets) or '(none)'}")


# ---------------------------------------------------------------------------- eval


@dataclass
class EvalReport:
    total: int = 0
    queue_tp: Counter[str] = field(default_factory=Counter)
    queue_fp: Counter[str] = field(default_factory=Counter)
    queue_fn: Counter[str] = field(default_factory=Counter)
    tag_tp: Counter[str] = field(default_factory=Counter)
    tag_fp: Counter[str] = field(default_factory=Counter)
    tag_fn: Counter[str] = field(default_factory=Counter)
    misrouted: list[dict[str, Any]] = field(default_factory=list)

    @staticmethod
    def _pr(tp: int, fp: int, fn: int) -> dict[str, Any]:
        precision = tp / (tp + fp) if tp + fp else None
        recall = tp / (tp + fn) if tp + fn else None
        return {"precision": precision, "recall": recall, "tp": tp, "fp": fp, "fn": fn}

    def queues(self) -> dict[str, dict[str, Any]]:
        names = sorted(set(self.queue_tp) | set(self.queue_fp) | set(self.queue_fn))
        return {q: self._pr(self.queue_tp[q], self.queue_fp[q], self.queue_fn[q]) for q in names}

    def tags(self) -> dict[str, dict[str, Any]]:
        names = sorted(set(self.tag_tp) | set(self.tag_fp) | set(self.tag_fn))
        return {t: self._pr(self.tag_tp[t], self.tag_fp[t], self.tag_fn[t]) for t in names}

    def accuracy(self) -> float | None:
        if not self.total:
            return None
        return sum(self.queue_tp.values()) / self.total

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "accuracy": self.accuracy(),
            "queues": self.queues(),
            "tags": self.tags(),
            "misrouted": self.misrouted,
        }


def _load_labeled(path: Path) -> list[tuple[int, Path, str | None, list[str] | None]]:
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise click.ClickException(f"{path}:{n}: not JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("path"), str):
            raise click.ClickException(
                f'{path}:{n}: expected {{"path": "x.eml", "queue": …, "tags": […]}}'
            )
        eml = Path(data["path"])
        if not eml.is_absolute():
            eml = path.parent / eml
        if not eml.is_file():
            raise click.ClickException(f"{path}:{n}: {data['path']}: file not found")
        queue = data.get("queue")
        tags = data.get("tags")
        if queue is not None and not isinstance(queue, str):
            raise click.ClickException(f"{path}:{n}: queue: expected a string")
        if tags is not None and not (
            isinstance(tags, list) and all(isinstance(t, str) for t in tags)
        ):
            raise click.ClickException(f"{path}:{n}: tags: expected a list of strings")
        items.append((n, eml, queue, tags))
    return items


async def evaluate(cfg: Config, labeled: Path) -> EvalReport:
    """Run every labeled file through the pipeline (dry-run) and score queues and tags."""
    runner = _runner(cfg)
    report = EvalReport()
    for n, eml, want_queue, want_tags in _load_labeled(labeled):
        env, _ = await run_file(eml.read_bytes(), cfg, runner=runner)
        report.total += 1
        got_queue = str(env.get("queue"))
        got_tags = set(env.get("tags") or [])
        wrong: dict[str, Any] = {}
        if want_queue is not None:
            if got_queue == want_queue:
                report.queue_tp[want_queue] += 1
            else:
                report.queue_fp[got_queue] += 1
                report.queue_fn[want_queue] += 1
                wrong["queue"] = {"expected": want_queue, "got": got_queue}
        if want_tags is not None:
            want = set(want_tags)
            for t in want & got_tags:
                report.tag_tp[t] += 1
            for t in got_tags - want:
                report.tag_fp[t] += 1
            for t in want - got_tags:
                report.tag_fn[t] += 1
            if want != got_tags:
                wrong["tags"] = {"expected": sorted(want), "got": sorted(got_tags)}
        if wrong:
            route = env.get("route") or {}
            report.misrouted.append(
                {
                    "line": n,
                    "path": str(eml),
                    **wrong,
                    "rule": route.get("rule"),
                    "reasons": route.get("reasons"),
                }
            )
    return report


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


@rules_group.command("eval")
@config_option
@click.argument("labeled", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
def eval_cmd(config_path: str | None, labeled: Path, as_json: bool) -> None:
    """Precision and recall per queue on LABELED.jsonl, and the misrouted cases."""
    cfg = load_cli_config(config_path)
    report = asyncio.run(evaluate(cfg, labeled))
    if as_json:
        print_json(report.to_json())
        return
    click.echo(f"{report.total} messages, queue accuracy {_fmt(report.accuracy())}")
    click.echo("")
    click.echo(f"{'queue':<20} {'precision':>9} {'recall':>7} {'tp':>4} {'fp':>4} {'fn':>4}")
    for q, s in report.queues().items():
        click.echo(
            f"{q:<20} {_fmt(s['precision']):>9} {_fmt(s['recall']):>7} {s['tp']:>4} {s['fp']:>4} {s['fn']:>4}"
        )
    tags = report.tags()
    if tags:
        click.echo("")
        click.echo(f"{'tag':<20} {'precision':>9} {'recall':>7} {'tp':>4} {'fp':>4} {'fn':>4}")
        for t, s in tags.items():
            click.echo(
                f"{t:<20} {_fmt(s['precision']):>9} {_fmt(s['recall']):>7} {s['tp']:>4} {s['fp']:>4} {s['fn']:>4}"
            )
    click.echo("")
    if not report.misrouted:
        click.echo("no misrouted messages")
    for m in report.misrouted:
        parts = []
        if "queue" in m:
            parts.append(f"queue {m['queue']['expected']} -> {m['queue']['got']}")
        if "tags" in m:
            parts.append(f"tags {m['tags']['expected']} -> {m['tags']['got']}")
        click.echo(
            f"misrouted {m['path']} (line {m['line']}): {', '.join(parts)} (rule {m['rule']})"
        )
