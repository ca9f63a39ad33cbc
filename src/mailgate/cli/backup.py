"""``mailgate backup DEST`` and ``mailgate restore SRC --data-dir NEW``.

The backup is a consistent online snapshot (see ``store.sqlite_backup``): run it while
``serve`` accepts mail. A restore goes into a new, empty data dir; check it with
``mailgate db check --data-dir NEW`` and point ``[store] data_dir`` (or ``--data-dir``) at it.
For PostgreSQL use ``pg_dump`` / ``pg_basebackup`` (README "Data governance").
"""

from __future__ import annotations

from pathlib import Path

import click

from mailgate.app import backups
from mailgate.cli.common import (
    config_option,
    data_dir_override,
    json_option,
    load_cli_config,
    print_json,
)
from mailgate.config import Config
from mailgate.store.base import StoreError
from mailgate.store.crypto import codec_for


def sqlite_only(cfg: Config, what: str) -> None:
    backend = getattr(cfg.store, "backend", "sqlite")
    if backend != "sqlite":
        raise click.ClickException(
            f"{what} works on the SQLite store; for {backend} use its own tools (pg_dump,"
            " pg_basebackup)"
        )


@click.command("backup")
@config_option
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@json_option
def backup_cmd(config_path: str | None, dest: Path, as_json: bool) -> None:
    """Snapshot the data dir (database, attachments, keys) into the new directory DEST."""
    cfg = load_cli_config(config_path)
    sqlite_only(cfg, "backup")
    try:
        report = backups.backup(Path(cfg.store.data_dir), dest)
    except (backups.BackupError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        print_json(report.as_dict())
        return
    click.echo(
        f"backed up {report.messages} messages and {report.blobs} attachment files to {dest}"
        f" ({(report.db_bytes + report.blob_bytes) / 1e6:.1f} MB in {report.seconds:.2f}s,"
        f" {report.megabytes_per_second:.1f} MB/s)"
    )
    if report.missing_blobs:
        click.echo(
            f"note: {report.missing_blobs} attachment files were removed while the backup ran"
            " (purged or erased); their messages' raw bytes are in the snapshot"
        )


@click.command("restore")
@config_option
@click.argument("src", type=click.Path(file_okay=False, exists=True, path_type=Path))
@json_option
def restore_cmd(config_path: str | None, src: Path, as_json: bool) -> None:
    """Restore the backup SRC into the new, empty data dir given by --data-dir."""
    target = data_dir_override()
    if not target:
        raise click.ClickException("give the new data dir: mailgate restore SRC --data-dir NEW")
    cfg = load_cli_config(config_path)
    sqlite_only(cfg, "restore")
    try:
        manifest = backups.restore(src, Path(target))
        check = backups.check(Path(target), codec_for(cfg))
    except (backups.BackupError, StoreError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        print_json({"manifest": manifest, "check": check.as_dict()})
    else:
        click.echo(f"restored {manifest.get('messages')} messages into {target}")
        click.echo("db check: " + ("ok" if check.ok else f"{len(check.problems)} problems"))
    if not check.ok:
        raise SystemExit(1)
