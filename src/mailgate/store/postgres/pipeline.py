"""The pipeline area on PostgreSQL: dedup, threads, quarantine, replay, audit.

Races between nodes end in a constraint, never in luck: two copies of one message claiming
one dedup key meet on the key's primary key (the second waits for the first's COMMIT, then
sees it and raises ``DedupConflict``: its run is retried and marks itself a duplicate); two
threads cannot share a ticket (unique index); a Message-ID is indexed once per tenant.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from mailgate.store.base import Intent, NotFound
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
from mailgate.store.postgres.base import (
    PgBase,
    applies,
    applies_together,
    apply_intents,
    dumps,
    rowcount,
    text,
)

# ---------------------------------------------------------------------------- appliers


@applies_together(DedupIntent)
async def apply_dedups(
    conn: asyncpg.Connection, msg_id: str, envelope: dict[str, Any], intents: list[DedupIntent]
) -> None:
    """A message's keys (Message-ID, and Message-ID with content) in one statement; a key
    another message holds goes on to ``_dedup_taken``."""
    inserted = await conn.fetch(
        "INSERT INTO dedup_keys (tenant, key, msg_id, seen_at)"
        " SELECT t, k, $3, s FROM unnest($1::text[], $2::text[], $4::float8[]) AS x(t, k, s)"
        " ON CONFLICT (tenant, key) DO NOTHING RETURNING tenant, key",
        [i.tenant for i in intents],
        [i.key for i in intents],
        msg_id,
        [i.seen_at for i in intents],
    )
    new = {(r["tenant"], r["key"]) for r in inserted}
    for intent in intents:
        if (intent.tenant, intent.key) not in new:
            await _dedup_taken(conn, msg_id, intent)


@applies(DedupIntent)
async def apply_dedup(
    conn: asyncpg.Connection, msg_id: str, envelope: dict[str, Any], intent: DedupIntent
) -> None:
    """Record the key as first seen here unless another message holds a live entry.

    ``ON CONFLICT DO NOTHING`` waits for a concurrent insert of the same key (another node)
    to commit; the row is then locked and judged like any earlier one.
    """
    await apply_dedups(conn, msg_id, envelope, [intent])


async def _dedup_taken(conn: asyncpg.Connection, msg_id: str, intent: DedupIntent) -> None:
    """The key exists: ours (a repeated run), live for another message (conflict: run again),
    or expired (now ours)."""
    row = await conn.fetchrow(
        "SELECT msg_id, seen_at FROM dedup_keys WHERE tenant = $1 AND key = $2 FOR UPDATE",
        intent.tenant,
        intent.key,
    )
    if row is None or row["msg_id"] == msg_id:
        return
    if row["seen_at"] >= intent.seen_at - intent.window:
        raise DedupConflict(f"{msg_id}: dedup key already claimed by {row['msg_id']}; run again")
    await conn.execute(
        "UPDATE dedup_keys SET msg_id = $3, seen_at = $4 WHERE tenant = $1 AND key = $2",
        intent.tenant,
        intent.key,
        msg_id,
        intent.seen_at,
    )


@applies(ThreadIntent)
async def apply_thread(
    conn: asyncpg.Connection, msg_id: str, envelope: dict[str, Any], intent: ThreadIntent
) -> None:
    """Create or extend the thread (row-locked), then index the Message-ID; idempotent.

    A new thread is one INSERT that yields on any unique key: if the thread exists already (a
    repeated run) it is extended as usual; if not, its ticket was taken (another node) and the
    run goes again (``ThreadConflict``). No savepoint, no look-up first."""
    at = intent.at or time.time()
    if intent.is_new and await _insert_thread(conn, intent, at):
        row = None
    else:
        row = await conn.fetchrow(
            "SELECT participants FROM threads WHERE id = $1 FOR UPDATE", intent.thread_id
        )
        # missing: a new thread whose ticket is taken, or a joined thread to create again
        if row is None and (intent.is_new or not await _insert_thread(conn, intent, at)):
            raise ThreadConflict(f"{msg_id}: ticket {intent.ticket} taken; run again")
    if row is not None:
        merged = sorted(
            read_participants(row["participants"]) | {intent.sender, *intent.participants} - {""}
        )
        await conn.execute(
            "UPDATE threads SET participants = $1, updated_at = GREATEST(updated_at, $2),"
            " message_count = message_count + 1 WHERE id = $3",
            dumps(merged),
            at,
            intent.thread_id,
        )
    if intent.message_id:
        mid = text(strip_mid(intent.message_id)) or ""
        inserted = await conn.fetchval(
            "INSERT INTO thread_messages (tenant, message_id, thread_id, msg_id, sender, at)"
            " VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT DO NOTHING RETURNING 1",
            intent.tenant,
            mid,
            intent.thread_id,
            msg_id,
            text(intent.sender) or "",
            at,
        )
        if not inserted:
            await _fill_placeholder(conn, msg_id, intent, mid, at)
    if intent.is_new and intent.awaits:
        await _claim_awaited(conn, msg_id, intent, at)


async def _insert_thread(conn: asyncpg.Connection, intent: ThreadIntent, at: float) -> bool:
    """Insert the thread; False when a unique key (its id, or its ticket) is taken."""
    participants = sorted({intent.sender, *intent.participants} - {""})
    inserted = await conn.fetchval(
        "INSERT INTO threads (id, tenant, ticket, contact, participants, subject, created_at,"
        " updated_at, message_count) VALUES ($1,$2,$3,$4,$5,$6,$7,$7,1)"
        " ON CONFLICT DO NOTHING RETURNING 1",
        intent.thread_id,
        intent.tenant,
        intent.ticket,
        text(intent.sender) or "",
        dumps(participants),
        text(intent.subject),
        at,
    )
    return bool(inserted)


async def _fill_placeholder(
    conn: asyncpg.Connection, msg_id: str, intent: ThreadIntent, mid: str, at: float
) -> None:
    """See the SQLite backend: a placeholder of this thread becomes ours; one of another thread
    means a reply (maybe on another node) started that thread for us — run again and join it."""
    row = await conn.fetchrow(
        "SELECT thread_id, msg_id FROM thread_messages WHERE tenant = $1 AND message_id = $2"
        " FOR UPDATE",
        intent.tenant,
        mid,
    )
    if row is None or row["msg_id"]:
        return
    if row["thread_id"] not in (intent.thread_id, intent.refused):
        raise ThreadConflict(f"{msg_id}: a reply started {row['thread_id']} for it; run again")
    await conn.execute(
        "UPDATE thread_messages SET thread_id = $6, msg_id = $1, sender = $2, at = $3"
        " WHERE tenant = $4 AND message_id = $5",
        msg_id,
        text(intent.sender) or "",
        at,
        intent.tenant,
        mid,
        intent.thread_id,
    )


async def _claim_awaited(
    conn: asyncpg.Connection, msg_id: str, intent: ThreadIntent, at: float
) -> None:
    """A placeholder for the In-Reply-To not stored yet; a concurrent insert of the same
    Message-ID (the original, or another reply, on another node) waits for the other COMMIT and
    then conflicts here: this run is retried and finds the thread."""
    awaited = text(strip_mid(intent.awaits or "")) or ""
    if not awaited:
        return
    inserted = await conn.fetchval(
        "INSERT INTO thread_messages (tenant, message_id, thread_id, msg_id, sender, at)"
        " VALUES ($1,$2,$3,'','',$4) ON CONFLICT DO NOTHING RETURNING 1",
        intent.tenant,
        awaited,
        intent.thread_id,
        at,
    )
    if inserted:
        return
    current = await conn.fetchval(
        "SELECT thread_id FROM thread_messages WHERE tenant = $1 AND message_id = $2",
        intent.tenant,
        awaited,
    )
    if current is not None and current != intent.thread_id:
        raise ThreadConflict(f"{msg_id}: <{awaited}> is in {current} now; run again")


@applies(QuarantineIntent)
async def apply_quarantine(
    conn: asyncpg.Connection, msg_id: str, envelope: dict[str, Any], intent: QuarantineIntent
) -> None:
    await conn.execute(
        "INSERT INTO quarantine (msg_id, tenant, reason, detail, created_at)"
        " VALUES ($1,$2,$3,$4,$5) ON CONFLICT (msg_id) DO UPDATE SET reason = excluded.reason,"
        " detail = excluded.detail, created_at = excluded.created_at, released_at = NULL,"
        " released_by = NULL",
        msg_id,
        intent.tenant,
        intent.reason,
        text(intent.detail) or "",
        intent.at or time.time(),
    )


@applies(AuditIntent)
async def apply_audit(
    conn: asyncpg.Connection, msg_id: str, envelope: dict[str, Any], intent: AuditIntent
) -> None:
    await conn.execute(
        "INSERT INTO audit_log (at, actor, action, target, detail) VALUES ($1,$2,$3,$4,$5)",
        intent.at or time.time(),
        intent.actor,
        intent.action,
        intent.target,
        dumps(intent.detail),
    )


_QUARANTINE_SELECT = (
    "SELECT q.msg_id, q.tenant, q.reason, q.detail, q.created_at, q.released_at,"
    " q.released_by, m.mail_from, m.subject, m.state FROM quarantine q"
    " JOIN messages m ON m.id = q.msg_id"
)


class PgPipelineMixin(PgBase):
    """The pipeline part of `PostgresStore` (``PipelinePorts`` and the operator views)."""

    _seqs: dict[str, int]  # msg_id -> ticket number of claimed messages (``claim_spooled``)

    # ------------------------------------------------------------------ PipelinePorts

    async def find_duplicate(self, tenant: str, key: str, since: float) -> DedupHit | None:
        row = await self._fetchrow(
            "SELECT msg_id, seen_at FROM dedup_keys WHERE tenant = $1 AND key = $2"
            " AND seen_at >= $3",
            tenant,
            key,
            since,
        )
        return DedupHit(row["msg_id"], row["seen_at"]) if row else None

    async def find_threads(self, tenant: str, message_ids: Sequence[str]) -> list[ThreadRef]:
        ids = [strip_mid(m) for m in message_ids if m and strip_mid(m)][:100]
        if not ids:
            return []
        rows = await self._fetch(
            "SELECT tm.message_id, tm.msg_id, t.id, t.ticket, t.contact, t.participants"
            " FROM thread_messages tm JOIN threads t ON t.id = tm.thread_id"
            " WHERE tm.tenant = $1 AND tm.message_id = ANY($2::text[])",
            tenant,
            ids,
        )
        return [thread_ref(r, r["message_id"]) for r in rows]

    async def find_thread_by_ticket(self, tenant: str, ticket: str) -> ThreadRef | None:
        r = await self._fetchrow(
            "SELECT id, ticket, contact, participants FROM threads WHERE tenant = $1 AND ticket = $2",
            tenant,
            ticket,
        )
        if r is None:
            return None
        return ThreadRef(r["id"], r["ticket"], r["contact"], read_participants(r["participants"]))

    async def message_seq(self, msg_id: str) -> int | None:
        """The ticket number, known from the claim for a claimed message (set at spool time,
        never changed: no round trip), else read."""
        known = self._seqs.pop(msg_id, None)
        if known is not None:
            return known
        row = await self._fetchrow(
            "SELECT COALESCE(tenant_seq, seq) AS n FROM messages WHERE id = $1", msg_id
        )
        return int(row["n"]) if row else None

    async def attachment_bytes(self, sha256: str) -> bytes | None:
        """Attachment bytes are not kept in the database; stages fall back to the envelope."""
        return None

    async def thread_of(self, msg_id: str) -> str | None:
        row = await self._fetchrow(
            "SELECT thread_id FROM thread_messages WHERE msg_id = $1 LIMIT 1", msg_id
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
        rows = await self._fetch(
            _QUARANTINE_SELECT + " WHERE ($1 OR q.released_at IS NULL)"
            " AND ($2::text IS NULL OR q.reason = $2) AND ($3::text IS NULL OR q.tenant = $3)"
            " ORDER BY q.created_at DESC, q.msg_id DESC LIMIT $4",
            include_released,
            reason,
            tenant,
            limit,
        )
        return [quarantine_record(r) for r in rows]

    async def get_quarantine(self, msg_id: str) -> QuarantineRecord:
        row = await self._fetchrow(_QUARANTINE_SELECT + " WHERE q.msg_id = $1", msg_id)
        if row is None:
            raise NotFound(msg_id)
        return quarantine_record(row)

    async def release_quarantined(
        self, msg_id: str, envelope: dict[str, Any], intents: list[Intent], *, actor: str
    ) -> None:
        """See the SQLite backend: state, quarantine row, audit and intents in one transaction."""
        now = time.time()
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow("SELECT state FROM messages WHERE id = $1 FOR UPDATE", msg_id)
            if row is None or row["state"] != "quarantined":
                raise NotFound(f"{msg_id} is not quarantined")
            q = await conn.fetchrow("SELECT reason FROM quarantine WHERE msg_id = $1", msg_id)
            await conn.execute(
                "UPDATE messages SET state = 'processed', envelope = $1, processed_at = $2"
                " WHERE id = $3",
                dumps(envelope),
                now,
                msg_id,
            )
            await conn.execute(
                "UPDATE quarantine SET released_at = $1, released_by = $2 WHERE msg_id = $3",
                now,
                actor,
                msg_id,
            )
            audit = AuditIntent(
                actor=actor,
                action="quarantine.release",
                target=msg_id,
                detail={"reason": q["reason"] if q else None},
                at=now,
            )
            await apply_intents(conn, msg_id, envelope, [*intents, audit])

    async def delete_quarantined(self, msg_id: str, *, actor: str) -> None:
        now = time.time()
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT state, tenant FROM messages WHERE id = $1 FOR UPDATE", msg_id
            )
            if row is None or row["state"] != "quarantined":
                raise NotFound(f"{msg_id} is not quarantined")
            q = await conn.fetchrow("SELECT reason FROM quarantine WHERE msg_id = $1", msg_id)
            for sql in (
                "DELETE FROM thread_messages WHERE msg_id = $1",
                "DELETE FROM dedup_keys WHERE msg_id = $1",
                "DELETE FROM quarantine WHERE msg_id = $1",
                "DELETE FROM messages WHERE id = $1",
            ):
                await conn.execute(sql, msg_id)
            await apply_audit(
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

    # ------------------------------------------------------------------ replay

    async def list_replayable(
        self,
        *,
        since: float | None = None,
        ids: Sequence[str] = (),
        tenant: str | None = None,
        limit: int = 100_000,
    ) -> list[str]:
        return await self._message_ids(
            "state IN ('processed', 'quarantined') AND envelope IS NOT NULL",
            since=since,
            ids=ids,
            tenant=tenant,
            limit=limit,
        )

    async def list_dead(
        self,
        *,
        since: float | None = None,
        ids: Sequence[str] = (),
        tenant: str | None = None,
        limit: int = 100_000,
    ) -> list[str]:
        return await self._message_ids(
            "state = 'dead'", since=since, ids=ids, tenant=tenant, limit=limit
        )

    async def _message_ids(
        self,
        where: str,
        *,
        since: float | None,
        ids: Sequence[str],
        tenant: str | None,
        limit: int,
    ) -> list[str]:
        rows = await self._fetch(
            f"SELECT id FROM messages WHERE {where}"
            " AND ($1::float8 IS NULL OR received_at >= $1) AND ($2::text IS NULL OR tenant = $2)"
            " AND (cardinality($3::text[]) = 0 OR id = ANY($3::text[])) ORDER BY seq LIMIT $4",
            since,
            tenant,
            list(ids),
            limit,
        )
        return [r["id"] for r in rows]

    async def requeue_dead(self, msg_id: str, *, actor: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                "UPDATE messages SET state = 'spooled', attempts = 0, last_error = NULL,"
                " lease_owner = NULL, lease_until = NULL WHERE id = $1 AND state = 'dead'",
                msg_id,
            )
            if rowcount(status) == 0:
                raise NotFound(f"{msg_id} is not dead")
            await apply_audit(
                conn,
                msg_id,
                {},
                AuditIntent(actor=actor, action="replay.requeue", target=msg_id, at=time.time()),
            )

    async def update_decision(
        self,
        msg_id: str,
        envelope: dict[str, Any],
        intents: list[Intent],
        *,
        actor: str,
        detail: dict[str, Any],
    ) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                "UPDATE messages SET envelope = $1, subject = $2 WHERE id = $3",
                dumps(envelope),
                text(envelope.get("subject")),
                msg_id,
            )
            if rowcount(status) == 0:
                raise NotFound(msg_id)
            audit = AuditIntent(
                actor=actor, action="replay", target=msg_id, detail=detail, at=time.time()
            )
            await apply_intents(conn, msg_id, envelope, [*intents, audit])

    # ------------------------------------------------------------------ audit

    async def record_audit(
        self, actor: str, action: str, target: str, detail: dict[str, Any] | None = None
    ) -> None:
        intent = AuditIntent(actor=actor, action=action, target=target, detail=detail or {})
        async with self.pool.acquire() as conn:
            await apply_audit(conn, target, {}, intent)

    async def list_audit(
        self, *, limit: int = 100, action: str | None = None, since: float | None = None
    ) -> list[AuditRecord]:
        rows = await self._fetch(
            "SELECT id, at, actor, action, target, detail FROM audit_log"
            " WHERE ($1::text IS NULL OR action = $1) AND ($2::float8 IS NULL OR at >= $2)"
            " ORDER BY id DESC LIMIT $3",
            action,
            since,
            limit,
        )
        return [audit_record(r) for r in rows]
