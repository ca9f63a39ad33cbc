"""The auto-reply outbox on PostgreSQL (``ReplyPorts``, ``ReplyStore``, the ``ReplyIntent``).

The rate limits are re-checked at commit under one transaction-scoped advisory lock, so two
nodes queueing acknowledgements to one return path at the same moment still count each other
(replies are rare next to messages: one lock costs nothing measurable). Sending is claimed like
webhooks: ``FOR UPDATE SKIP LOCKED`` plus a lease.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg

from mailgate.store.base import NotFound
from mailgate.store.notify import REPLIES
from mailgate.store.postgres.base import PgBase, applies, dumps, rowcount, text
from mailgate.store.postgres.notify import pg_channel
from mailgate.store.replies import (
    Banner,
    ReplyAttempt,
    ReplyIntent,
    ReplyItem,
    ReplyRecord,
    ReplyUsage,
    limit_keys,
)
from mailgate.store.replies_logic import (
    COUNTED,
    RECORD_COLS,
    banner,
    reply_item,
    reply_record,
    reply_usage,
    suppressed_decision,
)

REPLY_LOCK = 0x7265706C  # "repl": the advisory lock around the limit check and insert


async def limit_reason(conn: asyncpg.Connection, intent: ReplyIntent, now: float) -> str | None:
    """The first rate limit this reply would exceed, with every node's committed rows in view."""
    since = now - intent.per_sender_window
    key, domain = limit_keys(intent.recipient)
    checks: list[tuple[bool, str, str, tuple[Any, ...], int]] = [
        (
            intent.per_thread_limit > 0 and bool(intent.thread_id),
            "thread-limit",
            "thread_id = $1",
            (intent.thread_id,),
            intent.per_thread_limit,
        ),
        (
            intent.per_sender_limit > 0,
            "sender-limit",
            "recipient_key = $1 AND created_at >= $2",
            (key, since),
            intent.per_sender_limit,
        ),
        (
            intent.per_domain_limit > 0,
            "domain-limit",
            "recipient_domain = $1 AND created_at >= $2",
            (domain, since),
            intent.per_domain_limit,
        ),
        (
            intent.global_hourly_cap > 0,
            "global-cap",
            "created_at >= $1",
            (now - 3600.0,),
            intent.global_hourly_cap,
        ),
    ]
    for active, reason, where, args, limit in checks:
        if not active:
            continue
        n = await conn.fetchval(
            f"SELECT COUNT(*) FROM reply_outbox WHERE {where} AND {COUNTED}", *args
        )
        if n >= limit:
            return reason
    return None


@applies(ReplyIntent)
async def apply_reply(
    conn: asyncpg.Connection, msg_id: str, envelope: dict[str, Any], intent: ReplyIntent
) -> None:
    """Queue the reply unless this message has one; over a limit it is kept suppressed (and
    the envelope's ``reply`` says so, in the stored row and in ``envelope``)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", REPLY_LOCK)
    if await conn.fetchval("SELECT 1 FROM reply_outbox WHERE msg_id = $1", msg_id):
        return
    now = intent.at or time.time()
    reason = await limit_reason(conn, intent, now)
    await conn.execute(
        "INSERT INTO reply_outbox (id, msg_id, tenant, thread_id, ticket, queue, template,"
        " recipient, recipient_key, recipient_domain, mail_from, message_id, subject, draft,"
        " smtputf8, state, reason, next_attempt_at, created_at)"
        " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$18)",
        intent.reply_id,
        msg_id,
        intent.tenant,
        intent.thread_id,
        intent.ticket,
        intent.queue,
        intent.template,
        text(intent.recipient),
        *(text(k) for k in limit_keys(intent.recipient)),
        text(intent.mail_from),
        intent.message_id,
        text(intent.subject),
        text(intent.draft),
        intent.smtputf8,
        "pending" if reason is None else "suppressed",
        reason,
        now,
    )
    if reason is None:
        await conn.execute("SELECT pg_notify($1, '')", pg_channel(REPLIES))
        return
    decision = suppressed_decision(intent, reason)
    envelope["reply"] = decision
    await conn.execute(
        "UPDATE messages SET envelope = jsonb_set(envelope::jsonb, '{reply}', $1::jsonb)::text"
        " WHERE id = $2 AND envelope IS NOT NULL",
        dumps(decision),
        msg_id,
    )


class PgReplyMixin(PgBase):
    """The replies part of `PostgresStore`."""

    # ------------------------------------------------------------------ ReplyPorts

    async def reply_usage(
        self,
        msg_id: str,
        tenant: str,
        recipient: str,
        thread_id: str | None,
        *,
        sender_since: float,
        hour_since: float,
    ) -> ReplyUsage:
        key, domain = limit_keys(recipient)
        row = await self._fetchrow(
            "SELECT"
            f" (SELECT COUNT(*) FROM reply_outbox WHERE thread_id = $1 AND {COUNTED}) AS thread,"
            " (SELECT COUNT(*) FROM reply_outbox WHERE recipient_key = $2"
            f"   AND created_at >= $3 AND {COUNTED}) AS sender,"
            " (SELECT COUNT(*) FROM reply_outbox WHERE recipient_domain = $4"
            f"   AND created_at >= $3 AND {COUNTED}) AS domain,"
            f" (SELECT COUNT(*) FROM reply_outbox WHERE created_at >= $5 AND {COUNTED}) AS hour,"
            " (SELECT state FROM reply_outbox WHERE msg_id = $6) AS existing",
            thread_id or "",
            key,
            sender_since,
            domain,
            hour_since,
            msg_id,
        )
        if row is None:  # pragma: no cover - a SELECT without FROM always yields one row
            return ReplyUsage(0, 0, 0)
        return reply_usage(row, thread_id)

    async def reply_banners(self, queue: str | None) -> list[Banner]:
        rows = await self._fetch(
            "SELECT queue, text, set_at, set_by FROM reply_banners WHERE queue IN ($1, '')"
            " ORDER BY queue = '', queue",
            queue or "",
        )
        return [banner(r) for r in rows]

    # ------------------------------------------------------------------ SMTP worker

    async def claim_replies(
        self, limit: int, *, owner: str, lease: float, now: float | None = None
    ) -> list[ReplyItem]:
        at = time.time() if now is None else now
        rows = await self._fetch(
            "WITH c AS (SELECT id FROM reply_outbox WHERE state = 'pending'"
            " AND next_attempt_at <= $1 AND locked_until <= $1 ORDER BY next_attempt_at, seq"
            " LIMIT $2 FOR UPDATE SKIP LOCKED)"
            " UPDATE reply_outbox r SET locked_until = $3, lock_owner = $4 FROM c WHERE r.id = c.id"
            " RETURNING r.id, r.msg_id, r.tenant, r.recipient, r.mail_from, r.draft,"
            " r.message_id, r.attempts, r.smtputf8, r.next_attempt_at, r.seq",
            at,
            limit,
            at + lease,
            owner,
            fast=True,
        )
        rows = sorted(rows, key=lambda r: (r["next_attempt_at"], r["seq"]))
        return [reply_item(r) for r in rows]

    async def finish_reply(self, item: ReplyItem, result: ReplyAttempt, *, owner: str) -> None:
        now = time.time()
        attempt = item.attempts + 1
        error = text(result.error[:2000]) if result.error else None
        owned = "id = $1 AND state = 'pending' AND (lock_owner = $2 OR lock_owner IS NULL)"
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO reply_attempts (reply_id, attempt, at, code, error, outcome, node)"
                " VALUES ($1,$2,$3,$4,$5,$6,$7)",
                item.id,
                attempt,
                now,
                result.code,
                error,
                result.outcome,
                owner,
            )
            if result.outcome == "sent":
                await conn.execute(
                    "UPDATE reply_outbox SET state = 'sent', attempts = $3, sent_at = $4,"
                    " last_code = $5, last_error = NULL, locked_until = 0, lock_owner = NULL"
                    f" WHERE {owned}",
                    item.id,
                    owner,
                    attempt,
                    now,
                    result.code,
                )
            elif result.outcome == "retry":
                await conn.execute(
                    "UPDATE reply_outbox SET attempts = $3, next_attempt_at = $4, last_code = $5,"
                    f" last_error = $6, locked_until = 0, lock_owner = NULL WHERE {owned}",
                    item.id,
                    owner,
                    attempt,
                    result.next_attempt_at if result.next_attempt_at is not None else now,
                    result.code,
                    error,
                )
            elif result.outcome == "dead":
                await conn.execute(
                    "UPDATE reply_outbox SET state = 'dead', attempts = $3, dead_at = $4,"
                    " last_code = $5, last_error = $6, locked_until = 0, lock_owner = NULL"
                    f" WHERE {owned}",
                    item.id,
                    owner,
                    attempt,
                    now,
                    result.code,
                    error,
                )
            elif result.outcome == "skipped":
                await conn.execute(
                    "UPDATE reply_outbox SET state = 'suppressed', reason = $3, attempts = $4,"
                    " last_code = $5, last_error = $6, locked_until = 0, lock_owner = NULL"
                    f" WHERE {owned}",
                    item.id,
                    owner,
                    result.reason or "skipped",
                    attempt,
                    result.code,
                    error,
                )
            else:
                raise ValueError(f"unknown reply attempt outcome {result.outcome!r}")

    async def release_reply_leases(self, owner: str) -> int:
        status = await self._execute(
            "UPDATE reply_outbox SET locked_until = 0, lock_owner = NULL"
            " WHERE lock_owner = $1 AND state = 'pending'",
            owner,
        )
        return rowcount(status)

    async def next_reply_due_at(self) -> float | None:
        row = await self._fetchrow(
            "SELECT MIN(GREATEST(next_attempt_at, locked_until)) AS due FROM reply_outbox"
            " WHERE state = 'pending'"
        )
        return None if row is None or row["due"] is None else float(row["due"])

    # ------------------------------------------------------------------ operators

    async def list_replies(self, *, state: str | None = None, limit: int = 50) -> list[ReplyRecord]:
        rows = await self._fetch(
            f"SELECT {RECORD_COLS} FROM reply_outbox WHERE ($1::text IS NULL OR state = $1)"
            " ORDER BY seq DESC LIMIT $2",
            state,
            limit,
        )
        return [reply_record(r) for r in rows]

    async def get_reply(self, reply_id: str) -> ReplyRecord:
        row = await self._fetchrow(
            f"SELECT {RECORD_COLS} FROM reply_outbox WHERE id = $1 OR msg_id = $1", reply_id
        )
        if row is None:
            raise NotFound(f"reply {reply_id}")
        history = await self._fetch(
            "SELECT attempt, at, code, error, outcome FROM reply_attempts WHERE reply_id = $1"
            " ORDER BY id",
            row["id"],
        )
        return reply_record(row, [dict(h) for h in history])

    async def get_reply_draft(self, reply_id: str) -> str:
        row = await self._fetchrow(
            "SELECT draft FROM reply_outbox WHERE id = $1 OR msg_id = $1", reply_id
        )
        if row is None:
            raise NotFound(f"reply {reply_id}")
        return str(row["draft"])

    async def retry_replies(self, reply_ids: list[str] | None) -> int:
        if reply_ids is not None and not reply_ids:
            return 0
        async with self.pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                "UPDATE reply_outbox SET state = 'pending', attempts = 0, next_attempt_at = $1,"
                " dead_at = NULL, locked_until = 0, lock_owner = NULL WHERE state = 'dead'"
                " AND ($2::text[] IS NULL OR id = ANY($2::text[]) OR msg_id = ANY($2::text[]))",
                time.time(),
                reply_ids,
            )
            n = rowcount(status)
            if n:
                await conn.execute("SELECT pg_notify($1, '')", pg_channel(REPLIES))
        return n

    async def reply_stats(self) -> dict[str, int]:
        rows = await self._fetch("SELECT state, COUNT(*) AS n FROM reply_outbox GROUP BY state")
        return {r["state"]: int(r["n"]) for r in rows}

    async def set_banner(self, queue: str, text: str, *, by: str) -> None:
        await self._execute(
            "INSERT INTO reply_banners (queue, text, set_at, set_by) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (queue) DO UPDATE SET text = excluded.text, set_at = excluded.set_at,"
            " set_by = excluded.set_by",
            queue,
            text,
            time.time(),
            by,
        )

    async def clear_banner(self, queue: str) -> bool:
        status = await self._execute("DELETE FROM reply_banners WHERE queue = $1", queue)
        return rowcount(status) > 0

    async def list_banners(self) -> list[Banner]:
        rows = await self._fetch(
            "SELECT queue, text, set_at, set_by FROM reply_banners ORDER BY queue"
        )
        return [banner(r) for r in rows]
