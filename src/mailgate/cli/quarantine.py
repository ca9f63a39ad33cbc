"""``mailgate quarantine list|show|release|delete``: the operator's side of quarantine.

``release`` runs the stages after the quarantine decision on the stored envelope (with the
current rules: routing, auto-reply) and delivers it: the state change, the publish (through the
delivery area's ``PublishIntent`` applier) and the audit entry commit in one transaction.
``delete`` removes the message and its raw bytes. Every action is written to the audit log
(``mailgate audit list``) with who did it: ``--actor``, else ``$SUDO_USER``, else the login.
"""

from __future__ import annotations

import getpass
import os
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
)
from mailgate.config import ConfigError
from mailgate.pipeline.runner import PipelineRunner
from mailgate.store.base import NotFound
from mailgate.store.pipeline import QuarantineRecord


def default_actor() -> str:
    try:
        login = getpass.getuser()
    except (KeyError, OSError):
        login = "unknown"
    return os.environ.get("SUDO_USER") or login


actor_option = click.option(
    "--actor", default=None, help="Who is acting, for the audit log (default: $SUDO_USER or login)."
)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def record_json(r: QuarantineRecord) -> dict[str, Any]:
    return {
        "id": r.msg_id,
        "tenant": r.tenant,
        "reason": r.reason,
        "detail": r.detail,
        "quarantinedAt": _iso(r.created_at),
        "releasedAt": _iso(r.released_at),
        "releasedBy": r.released_by,
        "mailFrom": r.mail_from,
        "subject": r.subject,
        "state": r.state,
    }


@click.group("quarantine")
def quarantine_group() -> None:
    """Messages held for an operator (auth policy, risky attachments, rules)."""


@quarantine_group.command("list")
@config_option
@click.option("--reason", default=None, help="Only this reason (dmarc, auth, executable, …).")
@click.option("--tenant", default=None)
@click.option("--all", "include_released", is_flag=True, help="Include released messages.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100000))
@json_option
def list_cmd(
    config_path: str | None,
    reason: str | None,
    tenant: str | None,
    include_released: bool,
    limit: int,
    as_json: bool,
) -> None:
    """Quarantined messages, newest first."""
    cfg = load_cli_config(config_path)

    async def body() -> list[QuarantineRecord]:
        async with open_store(cfg) as store:
            return await store.list_quarantine(
                reason=reason, tenant=tenant, include_released=include_released, limit=limit
            )

    records = run(body)
    if as_json:
        print_json([record_json(r) for r in records])
        return
    if not records:
        click.echo("quarantine is empty")
        return
    for r in records:
        released = f"  released by {r.released_by}" if r.released_at else ""
        click.echo(
            f"{r.msg_id}  {_iso(r.created_at)}  {r.tenant:<10} {r.reason:<18} {r.mail_from or '<>'}"
            f"  {r.subject or ''!r}{released}"
        )


@quarantine_group.command("show")
@config_option
@click.argument("msg_id")
@json_option
def show_cmd(config_path: str | None, msg_id: str, as_json: bool) -> None:
    """One quarantined message: why, and its envelope."""
    cfg = load_cli_config(config_path)

    async def body() -> dict[str, Any]:
        async with open_store(cfg) as store:
            rec = await store.get_quarantine(msg_id)
            env = await store.get_envelope(msg_id)
            raw = await store.get_raw(msg_id)
        return {**record_json(rec), "size": len(raw), "envelope": env}

    data = run(body)
    if as_json:
        print_json(data)
        return
    env = data["envelope"] or {}
    click.echo(f"id        {data['id']}")
    click.echo(f"reason    {data['reason']}: {data['detail']}")
    click.echo(f"since     {data['quarantinedAt']}   state {data['state']}")
    if data["releasedAt"]:
        click.echo(f"released  {data['releasedAt']} by {data['releasedBy']}")
    click.echo(f"tenant    {data['tenant']}   size {data['size']} bytes")
    click.echo(
        f"from      {(env.get('from') or {}).get('email')}   mail from {data['mailFrom'] or '<>'}"
    )
    click.echo(f"subject   {env.get('subject')!r}")
    for att in env.get("attachments") or []:
        click.echo(
            f"attach    {att.get('filename')}  {att.get('contentType')}"
            f" (sniffed {att.get('detectedType')})  {att.get('size')} bytes"
        )
    for key in ("spf", "dkim", "dmarc"):
        section = env.get(key) or {}
        if section:
            click.echo(f"{key:<9} {section.get('result')} {section.get('domain') or ''}")


@quarantine_group.command("release")
@config_option
@click.argument("msg_id")
@actor_option
@json_option
def release_cmd(config_path: str | None, msg_id: str, actor: str | None, as_json: bool) -> None:
    """Deliver a quarantined message: run the rest of the pipeline, publish, audit."""
    cfg = load_cli_config(config_path)
    who = actor or default_actor()

    async def body() -> dict[str, Any]:
        async with open_store(cfg) as store:
            rec = await store.get_quarantine(msg_id)
            if rec.state != "quarantined":
                raise NotFound(f"{msg_id} is not quarantined (state {rec.state})")
            env = await store.get_envelope(msg_id)
            try:
                runner = PipelineRunner(cfg, store)
            except ConfigError as exc:
                raise click.ClickException(str(exc)) from None
            outcome = await runner.process(env, mode="release")
            env["releasedFrom"] = {"reason": rec.reason, "by": who, "at": _iso(time.time())}
            await store.release_quarantined(msg_id, env, outcome.intents, actor=who)
        return {
            "id": msg_id,
            "released": True,
            "reason": rec.reason,
            "actor": who,
            "state": outcome.state,
            "queue": env.get("queue"),
            "targets": list(outcome.targets),
            "delivered": any(type(i).__name__ == "PublishIntent" for i in outcome.intents),
        }

    data = run(body)
    if as_json:
        print_json(data)
        return
    how = (
        "delivered to " + (", ".join(data["targets"]) or "the event log")
        if data["delivered"]
        else "not delivered (duplicate)"
    )
    click.echo(f"released {msg_id} (was {data['reason']}), queue {data['queue']}, {how}")


@quarantine_group.command("delete")
@config_option
@click.argument("msg_id")
@actor_option
@json_option
def delete_cmd(config_path: str | None, msg_id: str, actor: str | None, as_json: bool) -> None:
    """Delete a quarantined message and its raw bytes (the audit entry stays)."""
    cfg = load_cli_config(config_path)
    who = actor or default_actor()

    async def body() -> None:
        async with open_store(cfg) as store:
            await store.delete_quarantined(msg_id, actor=who)

    run(body)
    if as_json:
        print_json({"id": msg_id, "deleted": True, "actor": who})
    else:
        click.echo(f"deleted {msg_id}")
