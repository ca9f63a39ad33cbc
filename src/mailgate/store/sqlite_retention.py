"""The retention purge for SQLite (see ``store.retention``), in bounded batches.

Each batch is one short transaction through the store's writer (``batch_size`` messages), so
the SMTP side's commits interleave with a long purge instead of waiting behind it. Candidate
rows are found with reads and checked against the per-tenant/per-queue durations in Python;
the writer re-checks nothing but the state (a message still ``spooled`` is never touched).

Space: deleted pages are zeroed (``secure_delete``) and, when the database has
``auto_vacuum = INCREMENTAL``, given back to the filesystem with ``PRAGMA incremental_vacuum``
in steps after the purge.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mailgate.config import RetentionConfig
from mailgate.store.governance import envelope_hashes, scrub_blobs
from mailgate.store.retention import (
    Progress,
    PurgeReport,
    expired,
    message_cutoff,
    shortest,
    sort_expired,
)
from mailgate.store.sqlite_base import SqliteBase
from mailgate.store.writer import connect

VACUUM_STEP = 2000  # pages per incremental_vacuum call (8 MB at 4 KB pages)
VACUUM_STEPS = 200
CHECKPOINT_TRIES = 50


def checkpoint_truncate(path: Path, synchronous: str) -> bool:
    """Copy the WAL into the database and truncate it to zero bytes, so page images of deleted
    rows do not linger in it; False if readers kept it busy for every try (the next checkpoint
    finishes the job)."""
    conn = connect(path, synchronous=synchronous)
    try:
        for _ in range(CHECKPOINT_TRIES):
            if conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0:
                return True
            time.sleep(0.1)
        return False
    finally:
        conn.close()


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _hashes(conn: sqlite3.Connection, ids: Sequence[str]) -> set[str]:
    """Attachment hashes of ``ids``: the attachments index and the envelopes."""

    if not ids:
        return set()
    marks = _marks(len(ids))
    out = {
        r[0]
        for r in conn.execute(
            f"SELECT sha256 FROM attachments WHERE msg_id IN ({marks})", tuple(ids)
        )
    }
    for r in conn.execute(f"SELECT envelope FROM messages WHERE id IN ({marks})", tuple(ids)):
        out |= envelope_hashes(r[0])
    return out


class RetentionMixin(SqliteBase):
    """``purge`` for `SqliteGovernance` (implements `store.retention.RetentionStore`)."""

    data_dir: Path
    synchronous: str

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
        await self._purge_messages(cfg, at, tenant, before, dry_run, report, progress)
        await self._purge_events(cfg, at, tenant, dry_run, report)
        await self._purge_dead(cfg, at, tenant, dry_run, report)
        if cfg.audit > 0 and tenant is None:
            await self._purge_audit(at - cfg.audit, cfg.batch_size, dry_run, report)
        if not dry_run and report.removed():
            report.pages_freed = await asyncio.to_thread(self.incremental_vacuum)
            if not await asyncio.to_thread(checkpoint_truncate, self.path, self.synchronous):
                report.notes.append(
                    "the WAL was busy: deleted pages leave it at a later checkpoint"
                )
            if await self._auto_vacuum() != 2:
                report.notes.append(
                    "auto_vacuum is off for this database: run `mailgate purge --vacuum` once to "
                    "give freed space back"
                )
        report.seconds = time.monotonic() - started
        return report

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
        where = "m.received_at < ? AND m.state != 'spooled'" + (
            " AND m.tenant = ?" if tenant else ""
        )
        params: tuple[Any, ...] = (cutoff, tenant) if tenant else (cutoff,)
        total_row = await self._read_one(
            f"SELECT COUNT(*) AS n FROM messages m WHERE {where}", params
        )
        total = int(total_row["n"]) if total_row else 0
        done, last_seq = 0, 0
        blobs: set[str] = set()
        while True:
            rows = await self._read(
                "SELECT m.seq, m.id, m.tenant, m.received_at, m.purged,"
                " json_extract(m.envelope, '$.queue') AS queue,"
                " EXISTS (SELECT 1 FROM message_raw r WHERE r.id = m.id) AS has_raw"
                f" FROM messages m WHERE m.seq > ? AND {where} ORDER BY m.seq LIMIT ?",
                (last_seq, *params, cfg.batch_size),
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

                    def write(
                        conn: sqlite3.Connection,
                        w: list[str] = whole,
                        r: list[str] = raw,
                        a: list[str] = atts,
                    ) -> set[str]:
                        return self._purge_batch(conn, w, r, a, report)

                    blobs |= await self._write(write)
            if progress is not None:
                progress(done, total)
        if blobs and not dry_run:
            await self._drop_unreferenced(blobs, report)

    @staticmethod
    def _purge_batch(
        conn: sqlite3.Connection,
        whole: list[str],
        raw: list[str],
        atts: list[str],
        report: PurgeReport,
    ) -> set[str]:
        """One writer transaction; returns the attachment hashes that may now be orphaned."""
        conn.execute("PRAGMA secure_delete = ON")
        hashes = _hashes(conn, whole) | _hashes(conn, atts)
        if whole:
            marks, p = _marks(len(whole)), tuple(whole)
            report.tombstones += conn.execute(
                f"SELECT (SELECT COUNT(*) FROM dedup_keys WHERE msg_id IN ({marks}))"
                f" + (SELECT COUNT(*) FROM thread_messages WHERE msg_id IN ({marks}))",
                p + p,
            ).fetchone()[0]
            threads = [
                r[0]
                for r in conn.execute(
                    f"SELECT DISTINCT thread_id FROM thread_messages WHERE msg_id IN ({marks})", p
                )
            ]
            # tombstones: the dedup key and the thread index row stay, without the sender
            conn.execute(f"UPDATE thread_messages SET sender = '' WHERE msg_id IN ({marks})", p)
            for table in ("labels", "quarantine"):
                conn.execute(f"DELETE FROM {table} WHERE msg_id IN ({marks})", p)
            cur = conn.execute(
                f"DELETE FROM messages WHERE state != 'spooled' AND id IN ({marks})", p
            )
            report.messages += cur.rowcount
            for thread_id in threads:  # a thread of tombstones only keeps no subject
                conn.execute(
                    "UPDATE threads SET subject = NULL WHERE id = ? AND NOT EXISTS (SELECT 1 FROM"
                    " thread_messages t JOIN messages m ON m.id = t.msg_id WHERE t.thread_id = ?)",
                    (thread_id, thread_id),
                )
        if raw:
            marks, p = _marks(len(raw)), tuple(raw)
            report.raw += conn.execute(f"DELETE FROM message_raw WHERE id IN ({marks})", p).rowcount
            conn.execute(f"UPDATE messages SET purged = purged || ',raw' WHERE id IN ({marks})", p)
        if atts:
            marks, p = _marks(len(atts)), tuple(atts)
            conn.execute(f"DELETE FROM attachments WHERE msg_id IN ({marks})", p)
            cur = conn.execute(
                f"UPDATE messages SET purged = purged || ',attachments' WHERE id IN ({marks})", p
            )
            report.attachments += cur.rowcount
        return hashes

    async def _drop_unreferenced(self, hashes: set[str], report: PurgeReport) -> None:
        """Delete the blob files no kept message needs (index rows, or envelopes of messages
        whose attachments were not purged); one scan per 50 hashes."""
        todo = sorted(hashes)
        keep: set[str] = set()
        for i in range(0, len(todo), 50):
            part = todo[i : i + 50]
            keep |= {
                r["sha256"]
                for r in await self._read(
                    f"SELECT DISTINCT sha256 FROM attachments WHERE sha256 IN ({_marks(len(part))})",
                    part,
                )
            }
            rest = [h for h in part if h not in keep]
            if not rest:
                continue
            cond = " OR ".join("instr(envelope, ?) > 0" for _ in rest)
            for r in await self._read(
                f"SELECT envelope FROM messages WHERE purged NOT LIKE '%attachments%' AND ({cond})",
                rest,
            ):
                keep |= {h for h in rest if h in (r["envelope"] or "")}
        files, size = await asyncio.to_thread(
            scrub_blobs, self.data_dir / "attachments", [h for h in todo if h not in keep]
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
            rows = await self._read(
                "SELECT e.seq, e.tenant, e.acked_at, json_extract(m.envelope, '$.queue') AS queue"
                " FROM events e JOIN messages m ON m.id = e.msg_id"
                " WHERE e.seq > ? AND e.acked_at IS NOT NULL AND e.acked_at < ?"
                + (" AND e.tenant = ?" if tenant else "")
                + " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = e.id"
                " AND o.state = 'pending') ORDER BY e.seq LIMIT ?",
                (last, at - low, *((tenant,) if tenant else ()), cfg.batch_size),
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

            def write(conn: sqlite3.Connection, seqs: list[int] = seqs) -> int:
                conn.execute("PRAGMA secure_delete = ON")
                sql = f"DELETE FROM events WHERE seq IN ({_marks(len(seqs))})"
                return conn.execute(sql, seqs).rowcount

            report.events += await self._write(write)

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
        t_sql = " AND e.tenant = ?" if tenant else ""
        t_p: tuple[str, ...] = (tenant,) if tenant else ()
        rows = await self._read(
            "SELECT o.id, e.tenant, o.dead_at, json_extract(m.envelope, '$.queue') AS queue"
            " FROM outbox o JOIN events e ON e.id = o.event_id JOIN messages m ON m.id = e.msg_id"
            f" WHERE o.state = 'dead' AND o.dead_at < ?{t_sql}",
            (at - low, *t_p),
        )
        replies = await self._read(
            "SELECT id, tenant, dead_at, queue FROM reply_outbox WHERE state = 'dead'"
            " AND dead_at < ?" + (" AND tenant = ?" if tenant else ""),
            (at - low, *t_p),
        )

        outbox_ids = [r["id"] for r in rows if expired(cfg, "dead_letters", r, "dead_at", at)]
        reply_ids = [r["id"] for r in replies if expired(cfg, "dead_letters", r, "dead_at", at)]
        if dry_run:
            report.dead_letters += len(outbox_ids) + len(reply_ids)
            return
        for table, ids in (("outbox", outbox_ids), ("reply_outbox", reply_ids)):
            for i in range(0, len(ids), cfg.batch_size):
                part = ids[i : i + cfg.batch_size]

                def write(
                    conn: sqlite3.Connection, table: str = table, part: list[Any] = part
                ) -> int:
                    conn.execute("PRAGMA secure_delete = ON")
                    return conn.execute(
                        f"DELETE FROM {table} WHERE id IN ({_marks(len(part))})", part
                    ).rowcount

                report.dead_letters += await self._write(write)
                report.batches += 1

    async def _purge_audit(
        self, cutoff: float, batch: int, dry_run: bool, report: PurgeReport
    ) -> None:
        if dry_run:
            row = await self._read_one(
                "SELECT COUNT(*) AS n FROM audit_log WHERE at < ?", (cutoff,)
            )
            report.audit += int(row["n"]) if row else 0
            return
        while True:

            def write(conn: sqlite3.Connection) -> int:
                return conn.execute(
                    "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE at < ?"
                    " ORDER BY id LIMIT ?)",
                    (cutoff, batch),
                ).rowcount

            n = await self._write(write)
            report.audit += n
            if n < batch:
                return
            report.batches += 1

    # ------------------------------------------------------------------ space

    async def _auto_vacuum(self) -> int:
        row = await self._read_one("PRAGMA auto_vacuum")
        return int(row[0]) if row is not None else 0

    def incremental_vacuum(self) -> int:
        """Give free pages back to the filesystem in steps; returns how many were freed."""
        conn = connect(self.path, synchronous=self.synchronous)
        freed = 0
        try:
            if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
                return 0
            for _ in range(VACUUM_STEPS):
                before = conn.execute("PRAGMA freelist_count").fetchone()[0]
                if not before:
                    break
                conn.executescript(f"PRAGMA incremental_vacuum({VACUUM_STEP});")
                after = conn.execute("PRAGMA freelist_count").fetchone()[0]
                freed += before - after
                if after >= before:
                    break
        finally:
            conn.close()
        return freed

    def full_vacuum(self) -> None:
        """``VACUUM`` (switches an old database to incremental auto-vacuum): holds the writer."""
        conn = connect(self.path, synchronous=self.synchronous)
        try:
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            conn.execute("PRAGMA temp_store = FILE")  # VACUUM's copy of the database: not in RAM
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
