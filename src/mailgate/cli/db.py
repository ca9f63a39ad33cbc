"""``mailgate db``: operations on the store itself (``check``).

``check`` verifies a data dir (a live one, or one just restored): SQLite's integrity check,
every message's raw bytes readable and of their recorded size, every attachment file's content
matching its hash, every referenced attachment present. On PostgreSQL: the schema is current,
every raw message reads back at its recorded size, every attachment row is derivable from its
raw message, and the node's local blob cache matches its hashes. Exit status 1 when anything
is wrong.
"""

from __future__ import annotations

import click

from mailgate.app import backups, check_store
from mailgate.cli.common import config_option, json_option, load_cli_config, print_json
from mailgate.store.base import StoreError


@click.group("db")
def db_group() -> None:
    """Store maintenance: schema status and migrations, consistency check."""


@db_group.command("check")
@config_option
@json_option
def check_cmd(config_path: str | None, as_json: bool) -> None:
    """Integrity, raw bytes and attachment hashes of the store (either backend)."""
    cfg = load_cli_config(config_path)
    try:
        report = check_store(cfg)
    except (backups.BackupError, StoreError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        print_json(report.as_dict())
    else:
        click.echo(f"integrity_check: {report.integrity}")
        click.echo(
            f"messages: {report.messages} ({report.raw_checked} raw read,"
            f" {report.raw_purged} purged by retention)"
        )
        click.echo(f"attachment files checked: {report.blobs_checked}")
        for problem in report.problems[:50]:
            click.echo(f"problem: {problem}")
        click.echo("ok" if report.ok else f"{len(report.problems)} problems")
    if not report.ok:
        raise SystemExit(1)
