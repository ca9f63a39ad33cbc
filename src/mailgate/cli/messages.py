"""``mailgate messages list|show|raw|label``: look at what was received; label it for the model."""

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
from mailgate.cli.quarantine import actor_option, default_actor


@click.group("messages")
def messages_group() -> None:
    """Inspect received messages."""


@messages_group.command("list")
@config_option
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10000))
@click.option(
    "--state", type=click.Choice(["spooled", "processed", "quarantined", "dead"]), default=None
)
@click.option("--tenant", default=None)
@json_option
def list_cmd(
    config_path: str | None, limit: int, state: str | None, tenant: str | None, as_json: bool
) -> None:
    """The newest messages first."""
    cfg = load_cli_config(config_path)

    async def body() -> list[dict[str, Any]]:
        async with open_store(cfg) as store:
            rows = await store.list_messages(limit=limit, state=state, tenant=tenant)
        return [
            {
                "id": r.id,
                "receivedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r.received_at)),
                "tenant": r.tenant,
                "mailFrom": r.mail_from,
                "rcptTo": r.rcpt_to,
                "size": r.size,
                "state": r.state,
                "subject": r.subject,
                "attempts": r.attempts,
                "lastError": r.last_error,
            }
            for r in rows
        ]

    items = run(body)
    if as_json:
        print_json(items)
        return
    if not items:
        click.echo("no messages")
        return
    for it in items:
        subject = it["subject"] or ""
        click.echo(
            f"{it['id']}  {it['receivedAt']}  {it['state']:<11}  {it['mailFrom'] or '<>'} -> "
            f"{', '.join(it['rcptTo'])}  {str(subject)[:60]!r}"
        )


@messages_group.command("show")
@config_option
@click.argument("msg_id")
@json_option
def show_cmd(config_path: str | None, msg_id: str, as_json: bool) -> None:
    """One message: its envelope once processed, else its spool record."""
    cfg = load_cli_config(config_path)

    row = run_with_store(cfg, lambda store: store.get_message_row(msg_id))
    env = row.get("envelope")
    if as_json:
        print_json(env if env else row)
        return
    click.echo(f"id:       {row['id']}")
    click.echo(f"state:    {row['state']}  (attempts {row['attempts']})")
    click.echo(
        f"received: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(float(row['received_at'])))}"
    )
    click.echo(f"from:     {row['mail_from'] or '<>'}  ({row['client_ip']}, helo {row['helo']})")
    click.echo(f"to:       {', '.join(row['rcpt_to'])}")
    click.echo(f"size:     {row['size']}")
    if row.get("last_error"):
        click.echo(f"error:    {row['last_error']}")
    if isinstance(env, dict):
        click.echo(f"subject:  {env.get('subject')}")
        click.echo(f"queue:    {env.get('queue')}  tags: {env.get('tags')}")
        for key in ("spf", "dkim", "dmarc"):
            val = env.get(key)
            if isinstance(val, dict):
                click.echo(f"{key + ':':<9} {val.get('result')} {val.get('domain') or ''}")


@messages_group.command("raw")
@config_option
@click.argument("msg_id")
def raw_cmd(config_path: str | None, msg_id: str) -> None:
    """The exact bytes received, to stdout."""
    cfg = load_cli_config(config_path)

    data = run_with_store(cfg, lambda store: store.get_raw(msg_id))
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


@messages_group.command("label")
@config_option
@click.argument("msg_id")
@click.option("--queue", required=True, help="The queue this message belongs in.")
@click.option("--tags", "tags", multiple=True, help="Tags (repeat, or comma-separated).")
@actor_option
def label_cmd(
    config_path: str | None, msg_id: str, queue: str, tags: tuple[str, ...], actor: str | None
) -> None:
    """Say where MSG_ID belongs: a label for `mailgate model train --from-store`."""
    cfg = load_cli_config(config_path)
    names = tuple(t.strip() for raw in tags for t in raw.split(",") if t.strip())
    if not queue.strip():
        raise click.BadParameter("a queue name", param_hint="--queue")
    who = f"cli:{actor or default_actor()}"
    rec = run_with_store(cfg, lambda store: store.add_label(msg_id, queue.strip(), names, by=who))
    click.echo(
        f"{rec.msg_id} labelled {rec.queue}" + (f" [{', '.join(rec.tags)}]" if rec.tags else "")
    )
