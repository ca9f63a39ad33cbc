"""Erasure on request (GDPR Art. 17) for the PostgreSQL backend (see ``store.governance``).

The same semantics as SQLite's (``sqlite_governance``), in one transaction on one database
that every node shares:

* candidates are messages whose envelope sender, recipients or envelope JSON contain the
  address, plus messages not processed yet (no envelope: their raw headers are read); each is
  checked against the parsed author/recipient fields (`governance.names_subject`), so a message
  that only mentions the address in its body is kept and counted as ``mentioned_elsewhere``;
* their rows go (raw bytes, events, outbox rows and attachment rows by cascade; dedup keys,
  thread index rows, quarantine, labels, replies explicitly), the person leaves the threads
  they were in, audit entries naming them are masked, and one ``subject.erased`` event per
  tenant is queued for the subscribed webhook targets (with a NOTIFY, so deliveries start now);
* ``dry_run`` runs the same statements and rolls the transaction back.

Bytes: PostgreSQL does not zero a deleted row's space. After the erase the touched tables are
``VACUUM``\\ ed (the dead rows' space becomes reusable and index entries go); until that space
is reused the bytes stay in the data files, and in WAL segments and base backups taken before —
the report's notes say so. Attachment files: each node keeps a local cache of them; this
node's copies of the erased attachments are scrubbed, and so is every cached file older than
an hour that no message references any more (so running the erase on each node clears the
others' caches too).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any

import asyncpg

from mailgate.store.base import StoreError
from mailgate.store.delivery import event_id_for
from mailgate.store.governance import (
    ERASED_EVENT,
    ErasureReport,
    begin_erasure,
    envelope_hashes,
    erasure_notices,
    leave_thread,
    names_subject,
    scrub_blobs,
    scrub_file,
)
from mailgate.store.notify import OUTBOX
from mailgate.store.postgres.base import dumps, rowcount
from mailgate.store.postgres.notify import pg_channel

NOTICE_STATE = "notice"  # the row that carries a subject.erased event (not a message)
SUBJECT_KEY_SECRET = "subject_hash_key"
CACHE_GRACE = 3600.0  # a cached file this young may belong to a message not committed yet
VACUUMED = (
    "messages",
    "message_raw",
    "events",
    "outbox",
    "attachments",
    "dedup_keys",
    "thread_messages",
    "threads",
    "quarantine",
    "labels",
    "reply_outbox",
    "reply_attempts",
    "audit_log",
)

_CANDIDATES = (
    "SELECT m.id, m.tenant, m.mail_from, m.rcpt_to, m.envelope, r.raw FROM messages m"
    " LEFT JOIN message_raw r ON r.id = m.id"
    " WHERE m.state != 'notice' AND ($1::text IS NULL OR m.tenant = $1)"
    " AND (strpos(lower(m.mail_from), $2) > 0 OR strpos(lower(m.rcpt_to), $2) > 0"
    " OR strpos(lower(m.envelope), $2) > 0 OR m.envelope IS NULL)"
    " ORDER BY m.seq"
)


class _DryRun(Exception):
    """Raised inside the transaction of a dry run: everything it did is rolled back."""


class PgErasure:
    """`GovernanceStore.erase_subject` on an open `PostgresStore` (see the module docstring)."""

    def __init__(self, store: Any, data_dir: Path) -> None:
        self.store = store
        self.data_dir = data_dir

    async def erase_subject(
        self,
        address: str,
        *,
        tenant: str | None = None,
        dry_run: bool = False,
        actor: str = "cli",
        notify: dict[str, list[str]] | None = None,
    ) -> ErasureReport:
        secret = await self.store.shared_secret(SUBJECT_KEY_SECRET)
        key = hashlib.sha256(secret.encode()).digest()
        addr, report = begin_erasure(address, key, tenant, dry_run)
        blobs: set[str] = set()
        try:
            async with self.store.pool.acquire() as conn, conn.transaction():
                blobs = await self._erase(conn, addr, tenant, report, actor, notify or {})
                if dry_run:
                    raise _DryRun
        except _DryRun:
            return report
        except asyncpg.PostgresError as exc:
            raise StoreError(f"erase failed: {exc}") from exc
        report.blobs_deleted, _ = await asyncio.to_thread(
            scrub_blobs, self.data_dir / "attachments", blobs
        )
        await self._vacuum(report)
        report.residue = await self._residue(addr)
        return report

    # ------------------------------------------------------------------ the transaction

    async def _erase(
        self,
        conn: asyncpg.Connection,
        addr: str,
        tenant: str | None,
        report: ErasureReport,
        actor: str,
        notify: dict[str, list[str]],
    ) -> set[str]:
        rows = await conn.fetch(_CANDIDATES, tenant, addr)
        owners = {r["id"]: r["tenant"] for r in rows if names_subject(r, addr)}
        ids = list(owners)
        report.mentioned_elsewhere = sum(  # the unprocessed ones were candidates for their raw
            1 for r in rows if r["id"] not in owners and r["envelope"] is not None
        )
        report.messages, report.message_ids = len(ids), list(ids)
        report.tenants = sorted(set(owners.values()) | ({tenant} if tenant else set()))
        count = conn.fetchval
        report.events = await count("SELECT count(*) FROM events WHERE msg_id = ANY($1)", ids)
        report.outbox = await count(
            "SELECT count(*) FROM outbox o JOIN events e ON e.id = o.event_id"
            " WHERE e.msg_id = ANY($1)",
            ids,
        )
        report.dedup_keys = await count(
            "SELECT count(*) FROM dedup_keys WHERE msg_id = ANY($1)", ids
        )
        report.attachments = await count(
            "SELECT count(*) FROM attachments WHERE msg_id = ANY($1)", ids
        )
        hashes = {
            r["sha256"]
            for r in await conn.fetch("SELECT sha256 FROM attachments WHERE msg_id = ANY($1)", ids)
        }
        for r in rows:
            if r["id"] in owners:
                hashes |= envelope_hashes(r["envelope"])
        reply_ids = [
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM reply_outbox WHERE (msg_id = ANY($1) OR recipient_key = $2)"
                " AND ($3::text IS NULL OR tenant = $3)",
                ids,
                addr,
                tenant,
            )
        ]
        report.replies = len(reply_ids)
        thread_ids = {
            r["thread_id"]
            for r in await conn.fetch(
                "SELECT DISTINCT thread_id FROM thread_messages WHERE msg_id = ANY($1)", ids
            )
        }
        thread_ids |= {
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM threads WHERE (lower(contact) = $1"
                " OR strpos(lower(participants), $1) > 0) AND ($2::text IS NULL OR tenant = $2)",
                addr,
                tenant,
            )
        }
        for table in ("thread_messages", "dedup_keys", "quarantine", "labels"):
            await conn.execute(f"DELETE FROM {table} WHERE msg_id = ANY($1)", ids)
        await conn.execute("DELETE FROM reply_outbox WHERE id = ANY($1)", reply_ids)
        await conn.execute("DELETE FROM messages WHERE id = ANY($1)", ids)  # cascades
        await conn.execute(
            "DELETE FROM thread_messages WHERE lower(sender) = $1"
            " AND ($2::text IS NULL OR tenant = $2)",
            addr,
            tenant,
        )
        for thread_id in sorted(thread_ids):
            await _fix_thread(conn, thread_id, addr, report)
        status = await conn.execute(
            "UPDATE audit_log SET target = $1, detail = $2 WHERE strpos(lower(target), $3) > 0"
            " OR strpos(lower(detail), $3) > 0",
            report.subject_hash,
            dumps({"masked": "subject.erase"}),
            addr,
        )
        report.audit_masked = rowcount(status)
        await _write_notices(conn, report, owners, notify)
        await conn.execute(
            "INSERT INTO audit_log (at, actor, action, target, detail) VALUES ($1,$2,$3,$4,$5)",
            time.time(),
            actor,
            "subject.erase",
            report.subject_hash,
            dumps(
                {
                    "tenants": report.tenants,
                    "messages": report.messages,
                    "events": report.events,
                    "replies": report.replies,
                    "threads_deleted": report.threads_deleted,
                    "blobs": len(hashes),
                }
            ),
        )
        referenced = {
            r["sha256"]
            for r in await conn.fetch(
                "SELECT DISTINCT sha256 FROM attachments WHERE sha256 = ANY($1)", list(hashes)
            )
        }
        return hashes - referenced

    # ------------------------------------------------------------------ after the commit

    async def sweep_cache(self) -> int:
        """Scrub cached attachment files no attachment row names any more (older than an hour)."""
        folder = self.data_dir / "attachments"
        if not folder.is_dir():
            return 0
        now = time.time()
        files = [
            p for p in folder.rglob("*") if p.is_file() and now - p.stat().st_mtime > CACHE_GRACE
        ]
        if not files:
            return 0
        names = [p.name for p in files]
        rows = await self.store._fetch(
            "SELECT DISTINCT sha256 FROM attachments WHERE sha256 = ANY($1)", names
        )
        known = {r["sha256"] for r in rows}
        orphans = [p for p in files if p.name not in known]
        for p in orphans:
            await asyncio.to_thread(scrub_file, p)
        return len(orphans)

    async def _vacuum(self, report: ErasureReport) -> None:
        try:
            async with self.store.pool.acquire() as conn:
                await conn.execute("VACUUM " + ", ".join(VACUUMED))
        except asyncpg.PostgresError as exc:
            report.notes.append(f"VACUUM after the erase failed ({exc}): autovacuum will do it")
            return
        report.vacuumed = True
        report.notes.append(
            "the touched tables were VACUUMed; PostgreSQL does not zero freed space: the bytes"
            " stay in the data files until reused (VACUUM FULL rewrites the tables), and in WAL"
            " archives and base backups taken before"
        )
        swept = await self.sweep_cache()
        if swept:
            report.blobs_deleted += swept
        report.notes.append(
            "each node keeps its own attachment cache: run the erase on every node (it also"
            " scrubs cached files no message references)"
        )

    async def _residue(self, addr: str) -> dict[str, int]:
        """Rows in any text column that still contain the address (kept messages that only
        mention it in their content, typically), by ``table.column``."""
        out: dict[str, int] = {}
        cols = await self.store._fetch(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND data_type = 'text'"
            " AND table_name != 'schema_version'"
        )
        for c in cols:
            n = await self.store._fetchrow(
                f'SELECT count(*) AS n FROM "{c["table_name"]}"'
                f' WHERE strpos(lower("{c["column_name"]}"), $1) > 0',
                addr,
            )
            if n is not None and n["n"]:
                out[f"{c['table_name']}.{c['column_name']}"] = int(n["n"])
        return out


async def _fix_thread(
    conn: asyncpg.Connection, thread_id: str, addr: str, report: ErasureReport
) -> None:
    """Delete a thread left empty; otherwise drop the person from its participants and, when
    they started it, hand the contact and subject to the earliest remaining message."""
    row = await conn.fetchrow("SELECT contact, participants FROM threads WHERE id = $1", thread_id)
    if row is None:
        return
    left = await conn.fetch(
        "SELECT t.msg_id, t.sender, m.subject FROM thread_messages t"
        " LEFT JOIN messages m ON m.id = t.msg_id WHERE t.thread_id = $1 ORDER BY t.at",
        thread_id,
    )
    if not left:
        await conn.execute("DELETE FROM threads WHERE id = $1", thread_id)
        report.threads_deleted += 1
        return
    participants, was_contact = leave_thread(row["contact"], row["participants"], {addr}, addr)
    if was_contact:
        await conn.execute(
            "UPDATE threads SET participants = $1, message_count = $2, contact = $3,"
            " subject = $4 WHERE id = $5",
            dumps(participants),
            len(left),
            left[0]["sender"],
            left[0]["subject"],
            thread_id,
        )
    else:
        await conn.execute(
            "UPDATE threads SET participants = $1, message_count = $2 WHERE id = $3",
            dumps(participants),
            len(left),
            thread_id,
        )
    report.threads_updated += 1


async def _write_notices(
    conn: asyncpg.Connection,
    report: ErasureReport,
    owners: dict[str, str],
    notify: dict[str, list[str]],
) -> None:
    """One ``subject.erased`` event per tenant, in the polling API and to the subscribed
    webhook targets; its carrier is a ``notice`` row in ``messages`` (events need one)."""
    now = time.time()
    queued = False
    for notice_id, t, body in erasure_notices(report, owners):
        await conn.execute(
            "INSERT INTO messages (id, received_at, tenant, mail_from, rcpt_to, size, state,"
            " processed_at, envelope) VALUES ($1, $2, $3, '', '[]', 0, $4, $2, $5)",
            notice_id,
            now,
            t,
            NOTICE_STATE,
            dumps(body),
        )
        event_id = event_id_for(notice_id, ERASED_EVENT)
        await conn.execute(
            "INSERT INTO events (id, msg_id, tenant, type, received_at, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $5)",
            event_id,
            notice_id,
            t,
            ERASED_EVENT,
            now,
        )
        for target in dict.fromkeys(notify.get(t, [])):
            await conn.execute(
                "INSERT INTO outbox (event_id, target, next_attempt_at, created_at)"
                " VALUES ($1, $2, $3, $3) ON CONFLICT (event_id, target) DO NOTHING",
                event_id,
                target,
                now,
            )
            queued = True
        report.notices.append(notice_id)
    if queued:
        await conn.execute("SELECT pg_notify($1, '')", pg_channel(OUTBOX))
