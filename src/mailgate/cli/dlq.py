"""``mailgate dlq list|show|retry|purge`` and the webhook target switches.

The dead-letter queue holds webhook deliveries that spent their retry schedule or met a
non-retryable answer. ``retry`` puts them back (attempts reset, due now); a running ``serve``
picks them up within ``[delivery] poll_interval``. A target that answered ``410 Gone`` is
disabled until ``enable-target``; its deliveries wait and leave once it is enabled again.
"""

from __future__ import annotations

import time
from typing import Any

import click

from mailgate.cli.common import (
    config_option,
    json_option,
    load_cli_config,
    open_store,
    print_json,
    run,
    run_with_store,
)
from mailgate.config import parse_duration
from mailgate.store.delivery import DlqEntry


def _iso(ts: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else None


def _entry_json(e: DlqEntry) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": e.id,
        "eventId": e.event_id,
        "messageId": e.msg_id,
        "tenant": e.tenant,
        "target": e.target,
        "attempts": e.attempts,
        "lastStatus": e.last_status,
        "lastError": e.last_error,
        "createdAt": _iso(e.created_at),
        "deadAt": _iso(e.dead_at),
    }
    if e.history:
        out["history"] = [
            {
                "attempt": h["attempt"],
                "at": _iso(h["at"]),
                "status": h["status"],
                "latencyMs": round(h["latency"] * 1000, 1),
                "error": h["error"],
                "outcome": h["outcome"],
            }
            for h in e.history
        ]
    return out


@click.group("dlq")
def dlq_group() -> None:
    """Webhook deliveries that failed for good: inspect, retry, purge; re-enable targets."""


@dlq_group.command("list")
@config_option
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1, 1_000_000))
@json_option
def list_cmd(config_path: str | None, limit: int, as_json: bool) -> None:
    """Dead deliveries, oldest first."""
    cfg = load_cli_config(config_path)

    entries = run_with_store(cfg, lambda store: store.dlq_list(limit=limit))
    if as_json:
        print_json([_entry_json(e) for e in entries])
        return
    if not entries:
        click.echo("the dead-letter queue is empty")
        return
    for e in entries:
        status = e.last_status if e.last_status is not None else "-"
        click.echo(
            f"{e.id:>6}  {_iso(e.dead_at)}  {e.event_id}  target={e.target}  "
            f"attempts={e.attempts}  status={status}  {(e.last_error or '')[:80]}"
        )


def _parse_ids(values: tuple[str, ...]) -> list[int]:
    ids = []
    for v in values:
        if not v.isdigit():
            raise click.BadParameter(f"{v!r} is not a DLQ id (see `mailgate dlq list`)")
        ids.append(int(v))
    return ids


@dlq_group.command("show")
@config_option
@click.argument("entry_id")
@json_option
def show_cmd(config_path: str | None, entry_id: str, as_json: bool) -> None:
    """One dead delivery with every attempt (ID from `dlq list`)."""
    cfg = load_cli_config(config_path)
    (num,) = _parse_ids((entry_id,))

    async def body() -> DlqEntry:
        async with open_store(cfg) as store:
            return await store.dlq_get(num)

    data = _entry_json(run(body))
    if as_json:
        print_json(data)
        return
    for key in (
        "id",
        "eventId",
        "messageId",
        "tenant",
        "target",
        "attempts",
        "createdAt",
        "deadAt",
        "lastStatus",
        "lastError",
    ):
        click.echo(f"{key:>10}: {data[key]}")
    click.echo("  attempts:")
    for h in data.get("history", []):
        click.echo(
            f"    #{h['attempt']}  {h['at']}  status={h['status'] or '-'}  "
            f"{h['latencyMs']} ms  {h['outcome']}  {(h['error'] or '')[:100]}"
        )


@dlq_group.command("retry")
@config_option
@click.argument("entry_ids", nargs=-1)
@click.option("--all", "retry_all", is_flag=True, help="Retry every dead delivery.")
def retry_cmd(config_path: str | None, entry_ids: tuple[str, ...], retry_all: bool) -> None:
    """Deliver again: attempts reset, due now (IDs from `dlq list`, or --all)."""
    if retry_all == bool(entry_ids):
        raise click.UsageError("give DLQ ids or --all (not both)")
    cfg = load_cli_config(config_path)
    ids = None if retry_all else _parse_ids(entry_ids)

    n = run_with_store(cfg, lambda store: store.dlq_retry(ids))
    if ids is not None and n < len(ids):
        raise click.ClickException(
            f"requeued {n} of {len(ids)}: the others are not in the dead-letter queue"
        )
    click.echo(f"requeued {n} deliver{'y' if n == 1 else 'ies'}")


@dlq_group.command("purge")
@config_option
@click.option(
    "--older-than",
    "older_than",
    required=True,
    help="Delete dead deliveries that died longer ago than this (e.g. 7d, 12h, 0s for all).",
)
def purge_cmd(config_path: str | None, older_than: str) -> None:
    """Delete dead deliveries for good (the messages and events stay)."""
    try:
        age = parse_duration(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    cfg = load_cli_config(config_path)
    cutoff = time.time() - age

    n = run_with_store(cfg, lambda store: store.dlq_purge(cutoff))
    click.echo(f"purged {n} dead deliver{'y' if n == 1 else 'ies'}")


@dlq_group.command("targets")
@config_option
@json_option
def targets_cmd(config_path: str | None, as_json: bool) -> None:
    """Webhook targets that are disabled (410 Gone, or by an operator)."""
    cfg = load_cli_config(config_path)

    disabled = run_with_store(cfg, lambda store: store.disabled_targets())
    if as_json:
        print_json({"disabled": disabled})
        return
    if not disabled:
        click.echo("no disabled targets")
    for name, reason in sorted(disabled.items()):
        click.echo(f"{name}  disabled: {reason}")


@dlq_group.command("enable-target")
@config_option
@click.argument("name")
def enable_target_cmd(config_path: str | None, name: str) -> None:
    """Re-enable a webhook target (its name, or its URL when unnamed); waiting events leave."""
    cfg = load_cli_config(config_path)

    async def body() -> bool:
        async with open_store(cfg) as store:
            return await store.enable_target(name)

    if not run(body):
        raise click.ClickException(f"target {name!r} is not disabled")
    click.echo(f"enabled {name}")


@dlq_group.command("disable-target")
@config_option
@click.argument("name")
@click.option("--reason", default="disabled by an operator", show_default=True)
def disable_target_cmd(config_path: str | None, name: str, reason: str) -> None:
    """Stop delivering to a target; its events wait until `enable-target`."""
    cfg = load_cli_config(config_path)
    known = {w.name or w.url for w in cfg.webhooks}
    if known and name not in known:
        raise click.ClickException(
            f"no webhook target {name!r}: expected one of {', '.join(sorted(known))}"
        )

    async def body() -> None:
        async with open_store(cfg) as store:
            await store.disable_target(name, reason)

    run(body)
    click.echo(f"disabled {name}")
