"""``mailgate audit list``: who did what to which message, and when (operator actions)."""

from __future__ import annotations

import time
from typing import Any

import click

from mailgate.cli.common import (
    config_option,
    json_option,
    load_cli_config,
    print_json,
    run_with_store,
)
from mailgate.logs import logfmt_value


@click.group("audit")
def audit_group() -> None:
    """The operator audit log (quarantine release/delete, replay)."""


@audit_group.command("list")
@config_option
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100000))
@click.option("--action", default=None, help="Only this action, e.g. quarantine.release.")
@json_option
def list_cmd(config_path: str | None, limit: int, action: str | None, as_json: bool) -> None:
    """Newest first: one line per entry (key=value), or a JSON array with --json."""
    cfg = load_cli_config(config_path)

    records = run_with_store(cfg, lambda store: store.list_audit(limit=limit, action=action))
    items: list[dict[str, Any]] = [
        {
            "id": r.id,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r.at)),
            "actor": r.actor,
            "action": r.action,
            "target": r.target,
            "detail": r.detail,
        }
        for r in records
    ]
    if as_json:
        print_json(items)
        return
    if not items:
        click.echo("audit log is empty")
    for i in items:
        # one line per entry, logfmt: the detail's keys become detail.<key> fields
        pairs = [(k, v) for k, v in i.items() if k != "detail"]
        detail = i["detail"]
        if isinstance(detail, dict):
            pairs += [(f"detail.{k}", v) for k, v in detail.items()]
        elif detail:
            pairs.append(("detail", detail))
        click.echo(" ".join(f"{k}={logfmt_value(v)}" for k, v in pairs))
