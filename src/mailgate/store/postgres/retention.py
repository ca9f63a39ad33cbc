"""The retention purge for the PostgreSQL backend (see ``store.retention``), in bounded batches.

The same rules as SQLite's (``sqlite_retention``): per tenant and per queue durations for raw
MIME, envelopes, attachments, delivered events, dead letters and the audit log; a message whose
envelope expires is deleted whole and leaves tombstones (its dedup keys and its thread index
row, without the sender) so a late duplicate is still recognised and a late reply still finds
its thread; a message still ``spooled`` is never touched. Each batch is one short transaction,
so other nodes' spools and completions interleave with a long purge. Several nodes may purge at
once: every statement is idempotent (a row deleted by one is simply not found by the other).

Space: PostgreSQL's autovacuum makes the deleted rows' space reusable; the report's notes say
so, and that ``VACUUM FULL`` is what returns it to the filesystem (``mailgate purge --vacuum``
runs a plain ``VACUUM`` of the purged tables, which does not block serving). Attachment files
live in each node's local cache: those of purged messages are scrubbed on the node that runs
the purge, and cached files no message references any more are swept as in the erasure.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

from mailgate.config import RetentionConfig
from mailgate.store.base import StoreError
from mailgate.store.governance import envelope_hashes, scrub_blobs
from mailgate.store.postgres.base import rowcount
from mailgate.store.postgres.erasure import VACUUMED, PgErasure
from mailgate.store.retention import (
    Progress,
    PurgeReport,
    expired,
    message_cutoff,
    shortest,
    sort_expired,
)

_QUEUE = "(CASE WHEN m.envelope IS NULL THEN NULL ELSE m.envelope::jsonb->>'queue' END)"


class PgGovernance(PgErasure):
    """The governance operations on an open `PostgresStore`: erasure (`PgErasure`) and the
    retention purge (`RetentionStore.purge`, ``full_vacuum``); ``app.governance_for`` builds
    one with the node's data dir (its attachment cache)."""

    async def purge(
        self,
        cfg: RetentionConfig,
        *,
        now: float | None = None,
        dry_run: bool = False,
        tenant: str | None = None,
        before: float | None = None,
        progress: Progress | None = None,
    ) -> PurgeReport:
        """Apply ``cfg`` as of ``now``; ``before``: also delete whole messages received before it."""
        started = time.monotonic()
        at = time.time() if now is None else now
        report = PurgeReport(dry_run=dry_run)
        try:
            await self._purge_messages(cfg, at, tenant, before, dry_run, report, progress)
            await self._purge_events(cfg, at, tenant, dry_run, report)
            await self._purge_dead(cfg, at, tenant, dry_run, report)
            if cfg.audit > 0 and tenant is None:
                await self._purge_audit(at - cfg.audit, dry_run, report)
        except asyncpg.PostgresError as exc:
            raise StoreError(f"purge failed: {exc}") from exc
        if not dry_run and report.removed():
            report.notes.append(
                "PostgreSQL: autovacuum makes the deleted rows' space reusable; `mailgate purge"
                " --vacuum` runs VACUUM now, VACUUM FULL (exclusive lock) gives it back to the"
                " filesystem"
            )
        report.seconds = time.monotonic() - started
        return report

    async def full_vacuum(self) -> None:
        """``VACUUM`` of the tables a purge touches (plain: serving goes on)."""
        async with self.store.pool.acquire() as conn:
            await conn.execute("VACUUM " + ", ".join(VACUUMED))

    # ------------------------------------------------------------------ messages

    async def _purge_messages(
        self,
        cfg: RetentionConfig,
        at: float,
        tenant: str | None,
        before: float | None,
        dry_run: bool,
        report: PurgeReport,
        progress: Progress | None,
    ) -> None:
        cutoff = message_cutoff(cfg, at, before)
        if cutoff is None:
            return
        where = (
            "m.received_at < $1 AND m.state NOT IN ('spooled', 'notice')"
            " AND ($2::text IS NULL OR m.tenant = $2)"
        )
        total = int(
            await self.store.pool.fetchval(
                f"SELECT count(*) FROM messages m WHERE {where}", cutoff, tenant
            )
        )
        done, last_seq = 0, 0
        blobs: set[str] = set()
        while True:
            rows = await self.store.pool.fetch(
                f"SELECT m.seq, m.id, m.tenant, m.received_at, m.purged, {_QUEUE} AS queue,"
                " EXISTS (SELECT 1 FROM message_raw r WHERE r.id = m.id) AS has_raw"
                f" FROM messages m WHERE m.seq > $3 AND {where} ORDER BY m.seq LIMIT $4",
                cutoff,
                tenant,
                last_seq,
                cfg.batch_size,
            )
            if not rows:
                break
            last_seq = rows[-1]["seq"]
            whole, raw, atts = sort_expired(rows, cfg, at, before)
            done += len(rows)
            if whole or raw or atts:
                report.batches += 1
                if dry_run:
                    report.would_remove(whole, raw, atts)
                else:
                    async with self.store.pool.acquire() as conn, conn.transaction():
                        blobs |= await _purge_batch(conn, whole, raw, atts, report)
            if progress is not None:
                progress(done, total)
        if blobs and not dry_run:
            await self._drop_unreferenced(blobs, report)

    async def _drop_unreferenced(self, hashes: set[str], report: PurgeReport) -> None:
        """Scrub this node's cached files of ``hashes`` that no kept message needs (an
        attachment row, or the envelope of a message whose attachments were not purged)."""
        todo = sorted(hashes)
        keep = {
            r["sha256"]
            for r in await self.store.pool.fetch(
                "SELECT DISTINCT sha256 FROM attachments WHERE sha256 = ANY($1)", todo
            )
        }
        for h in todo:
            if h in keep:
                continue
            if await self.store.pool.fetchval(
                "SELECT EXISTS (SELECT 1 FROM messages WHERE purged NOT LIKE '%attachments%'"
                " AND strpos(envelope, $1) > 0)",
                h,
            ):
                keep.add(h)
        files, size = await asyncio.to_thread(
            scrub_blobs, self.data_dir / "attachments", hashes - keep
        )
        report.blobs += files
        report.blob_bytes += size

    # ------------------------------------------------------------------ events, DLQ, audit

    async def _purge_events(
        self,
        cfg: RetentionConfig,
        at: float,
        tenant: str | None,
        dry_run: bool,
        report: PurgeReport,
    ) -> None:
        low = shortest(cfg, "delivered_events")
        if not low:
            return
        last = 0
        while True:
            rows = await self.store.pool.fetch(
                f"SELECT e.seq, e.tenant, e.acked_at, {_QUEUE} AS queue"
                " FROM events e JOIN messages m ON m.id = e.msg_id"
                " WHERE e.seq > $1 AND e.acked_at IS NOT NULL AND e.acked_at < $2"
                " AND ($3::text IS NULL OR e.tenant = $3)"
                " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = e.id"
                " AND o.state = 'pending') ORDER BY e.seq LIMIT $4",
                last,
                at - low,
                tenant,
                cfg.batch_size,
            )
            if not rows:
                return
            last = rows[-1]["seq"]
            seqs = [r["seq"] for r in rows if expired(cfg, "delivered_events", r, "acked_at", at)]
            if not seqs:
                continue
            report.batches += 1
            if dry_run:
                report.events += len(seqs)
                continue
            status = await self.store.pool.execute("DELETE FROM events WHERE seq = ANY($1)", seqs)
            report.events += rowcount(status)

    async def _purge_dead(
        self,
        cfg: RetentionConfig,
        at: float,
        tenant: str | None,
        dry_run: bool,
        report: PurgeReport,
    ) -> None:
        low = shortest(cfg, "dead_letters")
        if not low:
            return
        rows = await self.store.pool.fetch(
            f"SELECT o.id, e.tenant, o.dead_at, {_QUEUE} AS queue"
            " FROM outbox o JOIN events e ON e.id = o.event_id JOIN messages m ON m.id = e.msg_id"
            " WHERE o.state = 'dead' AND o.dead_at < $1 AND ($2::text IS NULL OR e.tenant = $2)",
            at - low,
            tenant,
        )
        replies = await self.store.pool.fetch(
            "SELECT id, tenant, dead_at, queue FROM reply_outbox WHERE state = 'dead'"
            " AND dead_at < $1 AND ($2::text IS NULL OR tenant = $2)",
            at - low,
            tenant,
        )

        outbox_ids = [r["id"] for r in rows if expired(cfg, "dead_letters", r, "dead_at", at)]
        reply_ids = [r["id"] for r in replies if expired(cfg, "dead_letters", r, "dead_at", at)]
        if dry_run:
            report.dead_letters += len(outbox_ids) + len(reply_ids)
            return
        for table, ids in (("outbox", outbox_ids), ("reply_outbox", reply_ids)):
            for i in range(0, len(ids), cfg.batch_size):
                part = ids[i : i + cfg.batch_size]
                status = await self.store.pool.execute(
                    f"DELETE FROM {table} WHERE id = ANY($1)", part
                )
                report.dead_letters += rowcount(status)
                report.batches += 1

    async def _purge_audit(self, cutoff: float, dry_run: bool, report: PurgeReport) -> None:
        if dry_run:
            n = await self.store.pool.fetchval(
                "SELECT count(*) FROM audit_log WHERE at < $1", cutoff
            )
            report.audit += int(n)
            return
        status = await self.store.pool.execute("DELETE FROM audit_log WHERE at < $1", cutoff)
        report.audit += rowcount(status)


async def _purge_batch(
    conn: asyncpg.Connection,
    whole: list[str],
    raw: list[str],
    atts: list[str],
    report: PurgeReport,
) -> set[str]:
    """One transaction; returns the attachment hashes that may now be orphaned."""
    hashes = {
        r["sha256"]
        for r in await conn.fetch(
            "SELECT sha256 FROM attachments WHERE msg_id = ANY($1)", [*whole, *atts]
        )
    }
    for r in await conn.fetch("SELECT envelope FROM messages WHERE id = ANY($1)", [*whole, *atts]):
        hashes |= envelope_hashes(r["envelope"])
    if whole:
        report.tombstones += int(
            await conn.fetchval(
                "SELECT (SELECT count(*) FROM dedup_keys WHERE msg_id = ANY($1))"
                " + (SELECT count(*) FROM thread_messages WHERE msg_id = ANY($1))",
                whole,
            )
        )
        threads = [
            r["thread_id"]
            for r in await conn.fetch(
                "SELECT DISTINCT thread_id FROM thread_messages WHERE msg_id = ANY($1)", whole
            )
        ]
        # tombstones: the dedup key and the thread index row stay, without the sender
        await conn.execute("UPDATE thread_messages SET sender = '' WHERE msg_id = ANY($1)", whole)
        for table in ("labels", "quarantine"):
            await conn.execute(f"DELETE FROM {table} WHERE msg_id = ANY($1)", whole)
        status = await conn.execute(
            "DELETE FROM messages WHERE state != 'spooled' AND id = ANY($1)", whole
        )
        report.messages += rowcount(status)
        # a thread of tombstones only keeps no subject
        await conn.execute(
            "UPDATE threads t SET subject = NULL WHERE t.id = ANY($1) AND NOT EXISTS (SELECT 1"
            " FROM thread_messages tm JOIN messages m ON m.id = tm.msg_id"
            " WHERE tm.thread_id = t.id)",
            threads,
        )
    if raw:
        status = await conn.execute("DELETE FROM message_raw WHERE id = ANY($1)", raw)
        report.raw += rowcount(status)
        await conn.execute("UPDATE messages SET purged = purged || ',raw' WHERE id = ANY($1)", raw)
    if atts:
        await conn.execute("DELETE FROM attachments WHERE msg_id = ANY($1)", atts)
        status = await conn.execute(
            "UPDATE messages SET purged = purged || ',attachments' WHERE id = ANY($1)", atts
        )
        report.attachments += rowcount(status)
    return hashes
