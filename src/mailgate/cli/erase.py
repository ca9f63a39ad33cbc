"""``mailgate erase --address A``: erase a data subject (GDPR Art. 17) from the store.

Works while ``serve`` runs (one transaction through the store's writer). Prints the report:
counts, never the address; the audit log gets an entry keyed by the subject's HMAC hash.
Consumers subscribed to ``subject.erased`` (``[[webhooks]] events``) are told which message
ids to erase downstream; the polling API lists the same event.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mailgate.app import governance_for
from mailgate.cli.common import (
    config_option,
    json_option,
    load_cli_config,
    print_json,
    run_with_store,
)
from mailgate.store.base import StoreError
from mailgate.store.governance import ErasureReport, erasure_targets, valid_address

SUMMARY = (
    ("messages", "messages"),
    ("events", "events"),
    ("outbox", "webhook outbox rows"),
    ("replies", "auto-replies"),
    ("threads_deleted", "threads deleted"),
    ("threads_updated", "threads updated"),
    ("dedup_keys", "dedup keys"),
    ("attachments", "attachment rows"),
    ("blobs_deleted", "attachment files"),
    ("audit_masked", "audit entries masked"),
)


@click.command("erase")
@config_option
@click.option("--address", required=True, help="The data subject's address (one mailbox).")
@click.option("--tenant", default=None, help="Only this tenant (default: every tenant).")
@click.option("--dry-run", is_flag=True, help="Count what would be erased; change nothing.")
@click.option("--actor", default="cli", show_default=True, help="Who asked, for the audit log.")
@json_option
def erase_cmd(
    config_path: str | None,
    address: str,
    tenant: str | None,
    dry_run: bool,
    actor: str,
    as_json: bool,
) -> None:
    """Erase every message a person sent or received, and everything derived from them."""
    if not valid_address(address):
        raise click.ClickException("--address takes one complete address like alice@example.com")
    cfg = load_cli_config(config_path)
    notify = erasure_targets(cfg.webhooks)

    async def query(store: Any) -> ErasureReport:
        governance = governance_for(store, Path(cfg.store.data_dir))
        if governance is None:
            raise StoreError("this store has no governance operations")
        return await governance.erase_subject(
            address, tenant=tenant, dry_run=dry_run, actor=actor, notify=notify
        )

    try:
        report = run_with_store(cfg, query)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        print_json(report.as_dict())
        return
    head = "would erase" if dry_run else "erased"
    click.echo(
        f"{head} subject {report.subject_hash} in {', '.join(report.tenants) or 'no tenant'}"
    )
    for key, label in SUMMARY:
        click.echo(f"  {label}: {getattr(report, key)}")
    if report.mentioned_elsewhere:
        click.echo(
            f"  kept: {report.mentioned_elsewhere} messages of other people mention the address"
            " in their content"
        )
    for note in report.notes:
        click.echo(f"  note: {note}")
    if report.residue and not dry_run:
        click.echo(
            "  still containing the address: "
            + ", ".join(f"{k}={v}" for k, v in sorted(report.residue.items()))
        )
