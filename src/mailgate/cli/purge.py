"""``mailgate purge``: apply ``[retention]`` now, with a progress bar and a summary.

``serve`` already purges every ``[retention] interval``; this is for a first clean-up, a dry
run before turning retention on (``--dry-run`` counts, changes nothing), or a one-off cut with
``--before DATE`` (whole messages received before that day, whatever the configured durations).
Safe while ``serve`` runs: each batch is one short transaction.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mailgate.app import governance_for
from mailgate.cli.common import (
    config_option,
    json_option,
    load_cli_config,
    print_json,
    run_with_store,
)
from mailgate.store.base import StoreError
from mailgate.store.retention import PurgeReport

SUMMARY = (
    ("messages", "whole messages (tombstones kept for dedup/threads)"),
    ("raw", "raw MIME"),
    ("attachments", "messages' attachments"),
    ("blobs", "attachment files"),
    ("events", "delivered events"),
    ("dead_letters", "dead letters"),
    ("audit", "audit entries"),
    ("tombstones", "tombstones left"),
)


def _parse_date(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("a date like 2026-01-31 or 2026-01-31T12:00:00") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


@click.command("purge")
@config_option
@click.option("--dry-run", is_flag=True, help="Count what would be removed; change nothing.")
@click.option("--tenant", default=None, help="Only this tenant's messages and events.")
@click.option("--before", default=None, help="Also remove whole messages received before DATE.")
@click.option("--vacuum", is_flag=True, help="Then VACUUM (turns on incremental auto-vacuum).")
@json_option
def purge_cmd(
    config_path: str | None,
    dry_run: bool,
    tenant: str | None,
    before: str | None,
    vacuum: bool,
    as_json: bool,
) -> None:
    """Remove what [retention] (or --before) says has expired."""
    cutoff = _parse_date(before)
    cfg = load_cli_config(config_path)
    console = Console(stderr=True)

    async def query(store: Any) -> PurgeReport:
        governance = governance_for(store, Path(cfg.store.data_dir))
        if governance is None:
            raise StoreError("this store has no governance operations")
        with Progress(
            TextColumn("[bold]purging" if not dry_run else "[bold]counting"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=as_json or not console.is_terminal,
        ) as bar:
            task = bar.add_task("messages", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            report = await governance.purge(
                cfg.retention, dry_run=dry_run, tenant=tenant, before=cutoff, progress=progress
            )
        if vacuum and not dry_run:
            if asyncio.iscoroutinefunction(governance.full_vacuum):  # PostgreSQL: plain VACUUM
                await governance.full_vacuum()
                report.notes.append("VACUUM done")
            else:
                await asyncio.to_thread(governance.full_vacuum)
                report.notes = [n for n in report.notes if "auto_vacuum" not in n]
                report.notes.append("VACUUM done: auto_vacuum is INCREMENTAL from now on")
        return report

    try:
        report = run_with_store(cfg, query)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        print_json(report.as_dict())
        return
    head = "would remove" if dry_run else "removed"
    click.echo(f"{head} in {report.batches} batches ({report.seconds:.2f}s):")
    for key, label in SUMMARY:
        click.echo(f"  {label}: {getattr(report, key)}")
    if report.blob_bytes:
        click.echo(f"  attachment bytes freed: {report.blob_bytes}")
    if report.pages_freed:
        click.echo(f"  database pages given back: {report.pages_freed}")
    for note in report.notes:
        click.echo(f"  note: {note}")
