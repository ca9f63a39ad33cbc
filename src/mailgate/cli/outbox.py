"""``mailgate outbox list|show|retry``: the SMTP outbox of auto-replies and its dead letters.

Each acknowledgement is one row: ``pending`` (waiting, or between retries), ``sent``, ``dead``
(a 5xx from the smarthost, or retries spent: the reply DLQ) or ``suppressed`` (a rate limit hit
when it was stored). ``retry`` puts dead replies back (attempts reset, due now); a running
``serve`` sends them within a second.
"""

from __future__ import annotations

import sys
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
from mailgate.reply.compose import ReplyDraft
from mailgate.store.replies import REPLY_STATES, ReplyRecord


def _iso(ts: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else None


def _json(r: ReplyRecord) -> dict[str, Any]:
    out = r.to_json()
    for key in ("createdAt", "nextAttemptAt", "sentAt", "deadAt"):
        out[key] = _iso(out[key])
    out["history"] = [
        {
            "attempt": h["attempt"],
            "at": _iso(h["at"]),
            "code": h["code"],
            "error": h["error"],
            "outcome": h["outcome"],
        }
        for h in r.history
    ]
    return out


@click.group("outbox")
def outbox_group() -> None:
    """Auto-replies waiting, sent, suppressed or dead: inspect them and retry dead ones."""


@outbox_group.command("list")
@config_option
@click.option("--state", type=click.Choice(REPLY_STATES), default=None, help="Only this state.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1_000_000))
@json_option
def list_cmd(config_path: str | None, state: str | None, limit: int, as_json: bool) -> None:
    """Replies, newest first."""
    cfg = load_cli_config(config_path)

    rows = run_with_store(cfg, lambda store: store.list_replies(state=state, limit=limit))
    if as_json:
        print_json([_json(r) for r in rows])
        return
    if not rows:
        click.echo("the reply outbox is empty" if state is None else f"no {state} replies")
        return
    for r in rows:
        note = r.reason or r.last_error or ""
        code = r.last_code if r.last_code is not None else "-"
        click.echo(
            f"{r.id}  {_iso(r.created_at)}  {r.state:<10}  to={r.recipient}  "
            f"ticket={r.ticket or '-'}  template={r.template}  attempts={r.attempts}  "
            f"code={code}  {note[:80]}"
        )


@outbox_group.command("show")
@config_option
@click.argument("reply_id")
@click.option("--raw", is_flag=True, help="Print the reply as it is sent (RFC 5322, unsigned).")
@json_option
def show_cmd(config_path: str | None, reply_id: str, raw: bool, as_json: bool) -> None:
    """One reply with every attempt (an outbox id ``rpl_…`` or the message id ``msg_…``)."""
    cfg = load_cli_config(config_path)

    async def body() -> tuple[ReplyRecord, bytes | None]:
        async with open_store(cfg) as store:
            record = await store.get_reply(reply_id)
            draft = (await store.get_reply_draft(record.id)) if raw else None
            return record, ReplyDraft.from_json(draft).build() if draft is not None else None

    record, message = run(body)
    if message is not None:
        sys.stdout.buffer.write(message)
        sys.stdout.flush()
        return
    data = _json(record)
    if as_json:
        print_json(data)
        return
    for key in (
        "id",
        "msgId",
        "tenant",
        "state",
        "reason",
        "recipient",
        "mailFrom",
        "subject",
        "ticket",
        "threadId",
        "queue",
        "template",
        "messageId",
        "attempts",
        "createdAt",
        "nextAttemptAt",
        "sentAt",
        "deadAt",
        "lastCode",
        "lastError",
    ):
        value = data[key]
        if key == "mailFrom" and value == "":
            value = "<> (null sender)"
        click.echo(f"{key:>13}: {value if value is not None else '-'}")
    if data["history"]:
        click.echo("     attempts:")
    for h in data["history"]:
        click.echo(
            f"    #{h['attempt']}  {h['at']}  code={h['code'] or '-'}  {h['outcome']}  "
            f"{(h['error'] or '')[:100]}"
        )


@outbox_group.command("retry")
@config_option
@click.argument("reply_ids", nargs=-1)
@click.option("--all", "retry_all", is_flag=True, help="Retry every dead reply.")
def retry_cmd(config_path: str | None, reply_ids: tuple[str, ...], retry_all: bool) -> None:
    """Send dead replies again: attempts reset, due now (ids from `outbox list`, or --all)."""
    if retry_all == bool(reply_ids):
        raise click.UsageError("give reply ids or --all (not both)")
    cfg = load_cli_config(config_path)
    ids = None if retry_all else list(reply_ids)

    n = run_with_store(cfg, lambda store: store.retry_replies(ids))
    if ids is not None and n < len(ids):
        raise click.ClickException(f"requeued {n} of {len(ids)}: the others are not dead replies")
    click.echo(f"requeued {n} repl{'y' if n == 1 else 'ies'}")
