"""SQLite methods and intent appliers of the pipeline area (see `store/pipeline.py` for the records).

Owns the dedup index, the thread index, the quarantine table and the operator audit log
(``migrations/002_pipeline.sql``). The appliers run inside the transaction of
``SqliteStore.complete`` (one writer, so they see every committed row); they are written to be
idempotent, and the dedup applier enforces "the first message wins" even when two worker
processes raced past the lookup (`DedupConflict`).

The lookups the pipeline makes on every message are point queries on primary keys: they use
``SqliteBase._lookup`` (no hop to aiosqlite's thread), and the pipeline's cost per message is
budgeted against the parser's (``bench/pipeline_bench.py``).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mailgate.store.base import Intent, NotFound, StoreError
from mailgate.store.blobs import BlobStore
from mailgate.store.pipeline import (
    AuditIntent,
    AuditRecord,
    DedupConflict,
    DedupHit,
    DedupIntent,
    QuarantineIntent,
    QuarantineRecord,
    ThreadConflict,
    ThreadIntent,
    ThreadRef,
)
from mailgate.store.pipeline_logic import (
    audit_record,
    quarantine_record,
    read_participants,
    strip_mid,
    thread_ref,
)
from mailgate.store.sqlite_base import SqliteBase, applies, dumps
from mailgate.store.sqlite_crypto import apply_sealed, index_intents, sealed_subject

# ---------------------------------------------------------------------------- appliers


@applies(DedupIntent)
def apply_dedup(
    conn: sqlite3.Connection, msg_id: str, envelope: dict[str, Any], intent: DedupIntent
) -> None:
    """Record the key as first seen here, unless another message holds a live entry."""
    row = conn.execute(
        "SELECT msg_id, seen_at FROM dedup_keys WHERE tenant = ? AND key = ?",
        (intent.tenant, intent.key),
    ).fetchone()
    if row is not None:
        if row["msg_id"] == msg_id:
            return
        if row["seen_at"] >= intent.seen_at - intent.window:
            raise DedupConflict(
                f"{msg_id}: dedup key already claimed by {row['msg_id']}; run again"
            )
    conn.execute(
        "INSERT INTO dedup_keys (tenant, key, msg_id, seen_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (tenant, key) DO UPDATE SET msg_id = excluded.msg_id,"
        " seen_at = excluded.seen_at",
        (intent.tenant, intent.key, msg_id, intent.seen_at),
    )


@applies(ThreadIntent)
def apply_thread(
    conn: sqlite3.Connection, msg_id: str, envelope: dict[str, Any], intent: ThreadIntent
) -> None:
    """Create or extend the thread, then index the Message-ID; idempotent."""
    at = intent.at or time.time()
    row = conn.execute(
        "SELECT participants FROM threads WHERE id = ?", (intent.thread_id,)
    ).fetchone()
    if row is None:
        participants = sorted({intent.sender, *intent.participants} - {""})
        try:
            conn.execute(
                "INSERT INTO threads (id, tenant, ticket, contact, participants, subject,"
                " created_at, updated_at, message_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
                (
                    intent.thread_id,
                    intent.tenant,
                    intent.ticket,
                    intent.sender,
                    dumps(participants),
                    intent.subject,
                    at,
                    at,
                ),
            )
        except sqlite3.IntegrityError as exc:  # the ticket is another thread's: run again
            raise ThreadConflict(f"{msg_id}: ticket {intent.ticket} taken; run again") from exc
    else:
        known = read_participants(row["participants"])
        merged = sorted(known | {intent.sender, *intent.participants} - {""})
        conn.execute(
            "UPDATE threads SET participants = ?, updated_at = MAX(updated_at, ?),"
            " message_count = message_count + 1 WHERE id = ?",
            (dumps(merged), at, intent.thread_id),
        )
    if intent.message_id:
        mid = strip_mid(intent.message_id)
        cur = conn.execute(
            "INSERT OR IGNORE INTO thread_messages (tenant, message_id, thread_id, msg_id, sender,"
            " at) VALUES (?, ?, ?, ?, ?, ?)",
            (intent.tenant, mid, intent.thread_id, msg_id, intent.sender, at),
        )
        if cur.rowcount == 0:
            _fill_placeholder(conn, msg_id, intent, mid, at)
    if intent.is_new and intent.awaits:
        _claim_awaited(conn, msg_id, intent, at)


def _fill_placeholder(
    conn: sqlite3.Connection, msg_id: str, intent: ThreadIntent, mid: str, at: float
) -> None:
    """Our Message-ID is indexed already. A placeholder of this thread: it is ours now. One of
    another thread: a reply named us first and started that thread — run again and join it. A
    real row: another message with the same Message-ID came first (it keeps the id)."""
    row = conn.execute(
        "SELECT thread_id, msg_id FROM thread_messages WHERE tenant = ? AND message_id = ?",
        (intent.tenant, mid),
    ).fetchone()
    if row is None or row["msg_id"]:
        return
    if row["thread_id"] not in (intent.thread_id, intent.refused):
        raise ThreadConflict(f"{msg_id}: a reply started {row['thread_id']} for it; run again")
    conn.execute(
        "UPDATE thread_messages SET thread_id = ?, msg_id = ?, sender = ?, at = ?"
        " WHERE tenant = ? AND message_id = ?",
        (intent.thread_id, msg_id, intent.sender, at, intent.tenant, mid),
    )


def _claim_awaited(conn: sqlite3.Connection, msg_id: str, intent: ThreadIntent, at: float) -> None:
    """A placeholder for the In-Reply-To not stored yet (see ``ThreadIntent.awaits``)."""
    awaited = strip_mid(intent.awaits or "")
    if not awaited:
        return
    cur = conn.execute(
        "INSERT OR IGNORE INTO thread_messages (tenant, message_id, thread_id, msg_id, sender,"
        " at) VALUES (?, ?, ?, '', '', ?)",
        (intent.tenant, awaited, intent.thread_id, at),
    )
    if cur.rowcount:
        return
    row = conn.execute(
        "SELECT thread_id FROM thread_messages WHERE tenant = ? AND message_id = ?",
        (intent.tenant, awaited),
    ).fetchone()
    if row is not None and row["thread_id"] != intent.thread_id:
        raise ThreadConflict(f"{msg_id}: <{awaited}> is in {row['thread_id']} now; run again")


@applies(QuarantineIntent)
def apply_quarantine(
    conn: sqlite3.Connection, msg_id: str, envelope: dict[str, Any], intent: QuarantineIntent
) -> None:
    conn.execute(
        "INSERT INTO quarantine (msg_id, tenant, reason, detail, created_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (msg_id) DO UPDATE SET reason = excluded.reason, detail = excluded.detail,"
        " created_at = excluded.created_at, released_at = NULL, released_by = NULL",
        (msg_id, intent.tenant, intent.reason, intent.detail, intent.at or time.time()),
    )


@applies(AuditIntent)
def apply_audit(
    conn: sqlite3.Connection, msg_id: str, envelope: dict[str, Any], intent: AuditIntent
) -> None:
    conn.execute(
        "INSERT INTO audit_log (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
        (
            intent.at or time.time(),
            intent.actor,
            intent.action,
            intent.target,
            dumps(intent.detail),
        ),
    )


# ---------------------------------------------------------------------------- mixin


class PipelineStoreMixin(SqliteBase):
    """The pipeline part of `SqliteStore`: the `PipelinePorts` lookups and operator actions."""

    data_dir: Path
    # ------------------------------------------------------------------ PipelinePorts

    async def find_duplicate(self, tenant: str, key: str, since: float) -> DedupHit | None:
        """See `PipelinePorts.find_duplicate`."""
        # stored as a keyed hash when encryption is on (sqlite_crypto.index_intents); plain
        # keys written before a key was configured still match
        rows = self._lookup(
            "SELECT msg_id, seen_at FROM dedup_keys WHERE tenant = ? AND key IN (?, ?)"
            " AND seen_at >= ?",
            (tenant, self.codec.index(key), key, since),
        )
        return DedupHit(rows[0]["msg_id"], rows[0]["seen_at"]) if rows else None

    async def find_threads(self, tenant: str, message_ids: Sequence[str]) -> list[ThreadRef]:
        """See `PipelinePorts.find_threads`."""
        ids = [strip_mid(m) for m in message_ids if m and strip_mid(m)]
        if not ids:
            return []
        ids = ids[:100]  # References can be long; the newest ones matter (RFC 5322 3.6.4)
        hashed = {self.codec.index(m): m for m in ids} if self.codec.enabled else {}
        ids = [*ids, *hashed]  # keyed hashes with encryption on; plain rows from before
        marks = ",".join("?" * len(ids))
        rows = self._lookup(
            "SELECT tm.message_id, tm.msg_id, t.id, t.ticket, t.contact, t.participants"
            " FROM thread_messages tm JOIN threads t ON t.id = tm.thread_id"
            f" WHERE tm.tenant = ? AND tm.message_id IN ({marks})",
            (tenant, *ids),
        )
        index = self.codec.index
        return [thread_ref(r, hashed.get(r["message_id"], r["message_id"]), index) for r in rows]

    async def find_thread_by_ticket(self, tenant: str, ticket: str) -> ThreadRef | None:
        """See `PipelinePorts.find_thread_by_ticket`."""
        rows = self._lookup(
            "SELECT id, ticket, contact, participants FROM threads WHERE tenant = ? AND ticket = ?",
            (tenant, ticket),
        )
        if not rows:
            return None
        r = rows[0]
        return ThreadRef(
            r["id"],
            r["ticket"],
            r["contact"],
            read_participants(r["participants"]),
            index=self.codec.index,
        )

    async def message_seq(self, msg_id: str) -> int | None:
        """See `PipelinePorts.message_seq`: the tenant's own number (``005_tenant_tickets.sql``)."""
        rows = self._lookup(
            "SELECT COALESCE(tenant_seq, seq) AS n FROM messages WHERE id = ?", (msg_id,)
        )
        return int(rows[0]["n"]) if rows else None

    async def attachment_bytes(self, sha256: str) -> bytes | None:
        """See `PipelinePorts.attachment_bytes` (the blob store beside the database)."""
        blobs = BlobStore(Path(self.data_dir) / "attachments")
        try:
            return blobs.get(sha256)
        except (OSError, ValueError):
            return None

    # ------------------------------------------------------------------ threads (operator views)

    async def thread_of(self, msg_id: str) -> str | None:
        row = await self._read_one(
            "SELECT thread_id FROM thread_messages WHERE msg_id = ? LIMIT 1", (msg_id,)
        )
        return str(row["thread_id"]) if row else None

    # ------------------------------------------------------------------ quarantine

    async def list_quarantine(
        self,
        *,
        reason: str | None = None,
        tenant: str | None = None,
        include_released: bool = False,
        limit: int = 100,
    ) -> list[QuarantineRecord]:
        where = []
        params: list[Any] = []
        if not include_released:
            where.append("q.released_at IS NULL")
        if reason:
            where.append("q.reason = ?")
            params.append(reason)
        if tenant:
            where.append("q.tenant = ?")
            params.append(tenant)
        sql = (
            "SELECT q.msg_id, q.tenant, q.reason, q.detail, q.created_at, q.released_at,"
            " q.released_by, m.mail_from, m.subject, m.state FROM quarantine q"
            " JOIN messages m ON m.id = q.msg_id"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY q.created_at DESC, q.msg_id DESC LIMIT ?"
        rows = await self._read(sql, [*params, limit])
        return [quarantine_record(self.codec.open_columns(r["msg_id"], r)) for r in rows]

    async def get_quarantine(self, msg_id: str) -> QuarantineRecord:
        row = await self._read_one(
            "SELECT q.msg_id, q.tenant, q.reason, q.detail, q.created_at, q.released_at,"
            " q.released_by, m.mail_from, m.subject, m.state FROM quarantine q"
            " JOIN messages m ON m.id = q.msg_id WHERE q.msg_id = ?",
            (msg_id,),
        )
        if row is None:
            raise NotFound(msg_id)
        return quarantine_record(self.codec.open_columns(msg_id, row))

    async def release_quarantined(
        self, msg_id: str, envelope: dict[str, Any], intents: list[Intent], *, actor: str
    ) -> None:
        """Mark a quarantined message processed with its new envelope and apply ``intents``.

        One transaction: the state change, the quarantine row, the audit entry and the
        intents (a ``PublishIntent`` through the delivery area's applier) commit together.
        Raises `NotFound` when the message is not (or no longer) quarantined.
        """
        env_json, sealed = self.codec.seal_envelope(msg_id, envelope)
        now = time.time()

        def write(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT state FROM messages WHERE id = ?", (msg_id,)).fetchone()
            if row is None or row["state"] != "quarantined":
                raise NotFound(f"{msg_id} is not quarantined")
            q = conn.execute("SELECT reason FROM quarantine WHERE msg_id = ?", (msg_id,)).fetchone()
            conn.execute(
                "UPDATE messages SET state = 'processed', envelope = ?, sealed = ?, processed_at = ?"
                " WHERE id = ?",
                (env_json, sealed, now, msg_id),
            )
            conn.execute(
                "UPDATE quarantine SET released_at = ?, released_by = ? WHERE msg_id = ?",
                (now, actor, msg_id),
            )
            audit = AuditIntent(
                actor=actor,
                action="quarantine.release",
                target=msg_id,
                detail={"reason": q["reason"] if q else None},
                at=now,
            )
            indexed = index_intents(self.codec, [*intents, audit])
            apply_sealed(conn, self.codec, msg_id, envelope, indexed)

        await self._write(write)

    async def delete_quarantined(self, msg_id: str, *, actor: str) -> None:
        """Delete a quarantined message, its raw bytes and index rows; the audit entry stays."""
        now = time.time()

        def write(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "SELECT state, tenant FROM messages WHERE id = ?", (msg_id,)
            ).fetchone()
            if row is None or row["state"] != "quarantined":
                raise NotFound(f"{msg_id} is not quarantined")
            q = conn.execute("SELECT reason FROM quarantine WHERE msg_id = ?", (msg_id,)).fetchone()
            conn.execute("DELETE FROM thread_messages WHERE msg_id = ?", (msg_id,))
            conn.execute("DELETE FROM dedup_keys WHERE msg_id = ?", (msg_id,))
            conn.execute("DELETE FROM quarantine WHERE msg_id = ?", (msg_id,))
            conn.execute("DELETE FROM message_raw WHERE id = ?", (msg_id,))
            conn.execute("DELETE FROM messages WHERE id = ?", (msg_id,))
            apply_audit(
                conn,
                msg_id,
                {},
                AuditIntent(
                    actor=actor,
                    action="quarantine.delete",
                    target=msg_id,
                    detail={"reason": q["reason"] if q else None, "tenant": row["tenant"]},
                    at=now,
                ),
            )

        try:
            await self._write(write)
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"cannot delete {msg_id}: {exc}") from exc

    # ------------------------------------------------------------------ replay

    async def list_replayable(
        self,
        *,
        since: float | None = None,
        ids: Sequence[str] = (),
        tenant: str | None = None,
        limit: int = 100_000,
    ) -> list[str]:
        """Ids of processed or quarantined messages (oldest first), filtered as asked."""
        where = ["state IN ('processed', 'quarantined')", "envelope IS NOT NULL"]
        return await self._message_ids(where, since=since, ids=ids, tenant=tenant, limit=limit)

    async def list_dead(
        self,
        *,
        since: float | None = None,
        ids: Sequence[str] = (),
        tenant: str | None = None,
        limit: int = 100_000,
    ) -> list[str]:
        """Ids of dead-lettered messages (processing failed ``max_attempts`` times), oldest first."""
        return await self._message_ids(
            ["state = 'dead'"], since=since, ids=ids, tenant=tenant, limit=limit
        )

    async def _message_ids(
        self,
        where: list[str],
        *,
        since: float | None,
        ids: Sequence[str],
        tenant: str | None,
        limit: int,
    ) -> list[str]:
        """Message ids matching ``where`` plus the optional filters, oldest first."""
        where = list(where)
        params: list[Any] = []
        if since is not None:
            where.append("received_at >= ?")
            params.append(since)
        if tenant:
            where.append("tenant = ?")
            params.append(tenant)
        if ids:
            where.append(f"id IN ({','.join('?' * len(ids))})")
            params.extend(ids)
        rows = await self._read(
            f"SELECT id FROM messages WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?",
            [*params, limit],
        )
        return [r["id"] for r in rows]

    async def requeue_dead(self, msg_id: str, *, actor: str) -> None:
        """Put a dead message back in the spool for the ingest worker, with an audit entry."""
        now = time.time()

        def write(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "UPDATE messages SET state = 'spooled', attempts = 0, last_error = NULL"
                " WHERE id = ? AND state = 'dead'",
                (msg_id,),
            )
            if cur.rowcount == 0:
                raise NotFound(f"{msg_id} is not dead")
            apply_audit(
                conn,
                msg_id,
                {},
                AuditIntent(actor=actor, action="replay.requeue", target=msg_id, at=now),
            )

        await self._write(write)

    async def update_decision(
        self,
        msg_id: str,
        envelope: dict[str, Any],
        intents: list[Intent],
        *,
        actor: str,
        detail: dict[str, Any],
    ) -> None:
        """Store a replayed envelope (and any intents, e.g. a redelivery) with an audit entry."""
        env_json, sealed = self.codec.seal_envelope(msg_id, envelope)
        subject = sealed_subject(self.codec, msg_id, envelope)
        now = time.time()

        def write(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "UPDATE messages SET envelope = ?, sealed = ?, subject = ? WHERE id = ?",
                (env_json, sealed, subject, msg_id),
            )
            if cur.rowcount == 0:
                raise NotFound(msg_id)
            audit = AuditIntent(actor=actor, action="replay", target=msg_id, detail=detail, at=now)
            indexed = index_intents(self.codec, [*intents, audit])
            apply_sealed(conn, self.codec, msg_id, envelope, indexed)

        await self._write(write)

    # ------------------------------------------------------------------ audit

    async def record_audit(
        self, actor: str, action: str, target: str, detail: dict[str, Any] | None = None
    ) -> None:
        intent = AuditIntent(actor=actor, action=action, target=target, detail=detail or {})

        def write(conn: sqlite3.Connection) -> None:
            apply_audit(conn, target, {}, intent)

        await self._write(write)

    async def list_audit(
        self, *, limit: int = 100, action: str | None = None, since: float | None = None
    ) -> list[AuditRecord]:
        where = []
        params: list[Any] = []
        if action:
            where.append("action = ?")
            params.append(action)
        if since is not None:
            where.append("at >= ?")
            params.append(since)
        sql = "SELECT id, at, actor, action, target, detail FROM audit_log"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        rows = await self._read(sql, [*params, limit])
        return [audit_record(r) for r in rows]
