"""SQLite methods and intent appliers of the replies area (see `store/replies.py` for the records).

Owns ``reply_outbox``, ``reply_attempts`` and ``reply_banners`` (``migrations/004_replies.sql``).
The `ReplyIntent` applier runs inside ``SqliteStore.complete``: it is idempotent (one reply per
message) and enforces the rate limits again with the committed rows in view, since the single
writer serializes every applier. Claims go through the writer as well, so a claim always sees
every committed reply; the applier wakes registered SMTP workers (``add_reply_waker``) so an
acknowledgement leaves within milliseconds instead of at the next poll.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from mailgate.store.base import NotFound
from mailgate.store.crypto import REPLY_SEALED_COLUMNS
from mailgate.store.replies import (
    Banner,
    ReplyAttempt,
    ReplyIntent,
    ReplyItem,
    ReplyRecord,
    ReplyUsage,
    limit_keys,
    stored_columns,
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
from mailgate.store.sqlite_base import SqliteBase, Wakers, applies, dumps

# ---------------------------------------------------------------------------- wake-ups

_WAKERS = Wakers()
add_reply_waker = _WAKERS.add
"""Call ``fn`` (from the writer thread: it must be thread-safe) whenever a reply is queued."""
remove_reply_waker = _WAKERS.remove
_wake = _WAKERS.wake


# ---------------------------------------------------------------------------- limits


def limit_reason(conn: sqlite3.Connection, intent: ReplyIntent, now: float) -> str | None:
    """The first rate limit this reply would exceed, with the committed rows in view.

    The return-path and domain limits count every tenant's replies (backscatter through many
    tenants is still bounded by one limit).
    """
    cols = stored_columns(intent)
    # the stored form (a keyed hash with encryption on) and the plain one (rows from before a
    # key was configured), as `reply_usage` counts them
    key, domain = limit_keys(intent.recipient)
    if intent.per_thread_limit > 0 and intent.thread_id:
        (n,) = conn.execute(
            f"SELECT COUNT(*) FROM reply_outbox WHERE thread_id = ? AND {COUNTED}",
            (intent.thread_id,),
        ).fetchone()
        if n >= intent.per_thread_limit:
            return "thread-limit"
    since = now - intent.per_sender_window
    if intent.per_sender_limit > 0:
        (n,) = conn.execute(
            "SELECT COUNT(*) FROM reply_outbox WHERE recipient_key IN (?, ?)"
            f" AND created_at >= ? AND {COUNTED}",
            (cols["recipient_key"], key, since),
        ).fetchone()
        if n >= intent.per_sender_limit:
            return "sender-limit"
    if intent.per_domain_limit > 0:
        (n,) = conn.execute(
            "SELECT COUNT(*) FROM reply_outbox WHERE recipient_domain IN (?, ?)"
            f" AND created_at >= ? AND {COUNTED}",
            (cols["recipient_domain"], domain, since),
        ).fetchone()
        if n >= intent.per_domain_limit:
            return "domain-limit"
    if intent.global_hourly_cap > 0:
        (n,) = conn.execute(
            f"SELECT COUNT(*) FROM reply_outbox WHERE created_at >= ? AND {COUNTED}",
            (now - 3600.0,),
        ).fetchone()
        if n >= intent.global_hourly_cap:
            return "global-cap"
    return None


# ---------------------------------------------------------------------------- applier


@applies(ReplyIntent)
def apply_reply(
    conn: sqlite3.Connection, msg_id: str, envelope: dict[str, Any], intent: ReplyIntent
) -> None:
    """Queue the reply unless this message already has one; over a limit it is kept suppressed.

    A suppressed reply also corrects the envelope's ``reply`` field, in the stored row (same
    transaction) and in ``envelope``: the stage wrote ``queued: true`` before the store knew.
    """
    if conn.execute("SELECT 1 FROM reply_outbox WHERE msg_id = ?", (msg_id,)).fetchone():
        return
    now = intent.at or time.time()
    cols = stored_columns(intent)
    reason = limit_reason(conn, intent, now)
    state = "pending" if reason is None else "suppressed"
    conn.execute(
        "INSERT INTO reply_outbox (id, msg_id, tenant, thread_id, ticket, queue, template,"
        " recipient, recipient_key, recipient_domain, mail_from, message_id, subject, draft,"
        " smtputf8, state, reason, next_attempt_at, created_at)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            intent.reply_id,
            msg_id,
            intent.tenant,
            intent.thread_id,
            intent.ticket,
            intent.queue,
            intent.template,
            cols["recipient"],
            cols["recipient_key"],
            cols["recipient_domain"],
            cols["mail_from"],
            intent.message_id,
            cols["subject"],
            cols["draft"],
            int(intent.smtputf8),
            state,
            reason,
            now,
            now,
        ),
    )
    if reason is None:
        _wake()
        return
    decision = suppressed_decision(intent, reason)
    envelope["reply"] = decision
    conn.execute(
        "UPDATE messages SET envelope = json_set(envelope, '$.reply', json(?))"
        " WHERE id = ? AND envelope IS NOT NULL",
        (dumps(decision), msg_id),
    )


class ReplyStoreMixin(SqliteBase):
    """The replies part of `SqliteStore` (implements `ReplyPorts` and `ReplyStore`)."""

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
        """See `ReplyPorts.reply_usage` (one read: five indexed counts)."""
        (key, domain), index = limit_keys(recipient), self.codec.index
        rows = self._lookup(  # made on every processed message: no thread hop
            "SELECT"
            f" (SELECT COUNT(*) FROM reply_outbox WHERE thread_id = ? AND {COUNTED}) AS thread,"
            " (SELECT COUNT(*) FROM reply_outbox WHERE recipient_key IN (?, ?)"
            f"   AND created_at >= ? AND {COUNTED}) AS sender,"
            " (SELECT COUNT(*) FROM reply_outbox WHERE recipient_domain IN (?, ?)"
            f"   AND created_at >= ? AND {COUNTED}) AS domain,"
            f" (SELECT COUNT(*) FROM reply_outbox WHERE created_at >= ? AND {COUNTED}) AS hour,"
            " (SELECT state FROM reply_outbox WHERE msg_id = ?) AS existing",
            (
                thread_id or "",
                key,
                index(key),  # a keyed hash with encryption on (see sqlite_crypto.seal_reply)
                sender_since,
                domain,
                index(domain),
                sender_since,
                hour_since,
                msg_id,
            ),
        )
        if not rows:  # pragma: no cover - a SELECT without FROM always yields one row
            return ReplyUsage(0, 0, 0)
        row = rows[0]
        return reply_usage(row, thread_id)

    async def reply_banners(self, queue: str | None) -> list[Banner]:
        """See `ReplyPorts.reply_banners`."""
        rows = self._lookup(
            "SELECT queue, text, set_at, set_by FROM reply_banners WHERE queue IN (?, '')"
            " ORDER BY queue = '' , queue",
            (queue or "",),
        )
        return [banner(r) for r in rows]

    # ------------------------------------------------------------------ SMTP worker

    async def claim_replies(
        self, limit: int, *, owner: str, lease: float, now: float | None = None
    ) -> list[ReplyItem]:
        """See `ReplyStore.claim_replies`."""
        at = time.time() if now is None else now

        def write(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM reply_outbox WHERE state = 'pending' AND next_attempt_at <= ?"
                    " AND locked_until <= ? ORDER BY next_attempt_at, rowid LIMIT ?",
                    (at, at, limit),
                )
            ]
            if not ids:
                return []
            marks = ",".join("?" * len(ids))
            conn.execute(
                f"UPDATE reply_outbox SET locked_until = ?, lock_owner = ? WHERE id IN ({marks})",
                (at + lease, owner, *ids),
            )
            return list(
                conn.execute(
                    "SELECT id, msg_id, tenant, recipient, mail_from, draft, message_id,"
                    f" attempts, smtputf8 FROM reply_outbox WHERE id IN ({marks})"
                    " ORDER BY next_attempt_at, rowid",
                    ids,
                )
            )

        rows: list[sqlite3.Row] = await self._write(write)
        return [reply_item(self.codec.open_columns(r["id"], r, REPLY_SEALED_COLUMNS)) for r in rows]

    async def finish_reply(self, item: ReplyItem, result: ReplyAttempt, *, owner: str) -> None:
        """See `ReplyStore.finish_reply`."""
        now = time.time()
        attempt = item.attempts + 1
        text = result.error[:2000] if result.error else None
        # a remote server's answer often quotes the recipient ("550 5.1.1 <pat@…>: unknown"):
        # sealed like the recipient itself when encryption is on
        error = self.codec.seal_text(f"{item.id}:last_error", text) if text else None
        logged = self.codec.seal_text(f"{item.id}:error:{attempt}", text) if text else None

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO reply_attempts (reply_id, attempt, at, code, error, outcome)"
                " VALUES (?,?,?,?,?,?)",
                (item.id, attempt, now, result.code, logged, result.outcome),
            )
            owned = "id = ? AND state = 'pending' AND (lock_owner = ? OR lock_owner IS NULL)"
            if result.outcome == "sent":
                conn.execute(
                    "UPDATE reply_outbox SET state = 'sent', attempts = ?, sent_at = ?,"
                    " last_code = ?, last_error = NULL, locked_until = 0, lock_owner = NULL"
                    f" WHERE {owned}",
                    (attempt, now, result.code, item.id, owner),
                )
            elif result.outcome == "retry":
                conn.execute(
                    "UPDATE reply_outbox SET attempts = ?, next_attempt_at = ?, last_code = ?,"
                    f" last_error = ?, locked_until = 0, lock_owner = NULL WHERE {owned}",
                    (
                        attempt,
                        result.next_attempt_at if result.next_attempt_at is not None else now,
                        result.code,
                        error,
                        item.id,
                        owner,
                    ),
                )
            elif result.outcome == "dead":
                conn.execute(
                    "UPDATE reply_outbox SET state = 'dead', attempts = ?, dead_at = ?,"
                    " last_code = ?, last_error = ?, locked_until = 0, lock_owner = NULL"
                    f" WHERE {owned}",
                    (attempt, now, result.code, error, item.id, owner),
                )
            elif result.outcome == "skipped":
                conn.execute(
                    "UPDATE reply_outbox SET state = 'suppressed', reason = ?, attempts = ?,"
                    " last_code = ?, last_error = ?, locked_until = 0, lock_owner = NULL"
                    f" WHERE {owned}",
                    (result.reason or "skipped", attempt, result.code, error, item.id, owner),
                )
            else:
                raise ValueError(f"unknown reply attempt outcome {result.outcome!r}")

        await self._write(write)

    async def release_reply_leases(self, owner: str) -> int:
        def write(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "UPDATE reply_outbox SET locked_until = 0, lock_owner = NULL"
                " WHERE lock_owner = ? AND state = 'pending'",
                (owner,),
            )
            return cur.rowcount

        n: int = await self._write(write)
        return n

    async def next_reply_due_at(self) -> float | None:
        row = await self._read_one(
            "SELECT MIN(MAX(next_attempt_at, locked_until)) AS due FROM reply_outbox"
            " WHERE state = 'pending'"
        )
        return None if row is None or row["due"] is None else float(row["due"])

    # ------------------------------------------------------------------ operators

    async def list_replies(self, *, state: str | None = None, limit: int = 50) -> list[ReplyRecord]:
        sql = f"SELECT {RECORD_COLS} FROM reply_outbox"
        params: list[Any] = []
        if state:
            sql += " WHERE state = ?"
            params.append(state)
        sql += " ORDER BY rowid DESC LIMIT ?"
        params.append(limit)
        rows = await self._read(sql, params)
        return [
            reply_record(self.codec.open_columns(r["id"], r, REPLY_SEALED_COLUMNS)) for r in rows
        ]

    async def get_reply(self, reply_id: str) -> ReplyRecord:
        """By outbox id (``rpl_…``) or by the acknowledged message's id (``msg_…``)."""
        row = await self._read_one(
            f"SELECT {RECORD_COLS} FROM reply_outbox WHERE id = ? OR msg_id = ?",
            (reply_id, reply_id),
        )
        if row is None:
            raise NotFound(f"reply {reply_id}")
        history = await self._read(
            "SELECT attempt, at, code, error, outcome FROM reply_attempts WHERE reply_id = ?"
            " ORDER BY id",
            (row["id"],),
        )
        opened = self.codec.open_columns(row["id"], row, REPLY_SEALED_COLUMNS)
        attempts = [dict(h) for h in history]
        for h in attempts:
            if h["error"]:
                h["error"] = self.codec.open_text(f"{row['id']}:error:{h['attempt']}", h["error"])
        return reply_record(opened, attempts)

    async def get_reply_draft(self, reply_id: str) -> str:
        row = await self._read_one(
            "SELECT id, draft FROM reply_outbox WHERE id = ? OR msg_id = ?", (reply_id, reply_id)
        )
        if row is None:
            raise NotFound(f"reply {reply_id}")
        return str(self.codec.open_text(f"{row['id']}:draft", row["draft"]))

    async def retry_replies(self, reply_ids: list[str] | None) -> int:
        now = time.time()

        def write(conn: sqlite3.Connection) -> int:
            sql = (
                "UPDATE reply_outbox SET state = 'pending', attempts = 0, next_attempt_at = ?,"
                " dead_at = NULL, locked_until = 0, lock_owner = NULL WHERE state = 'dead'"
            )
            params: list[Any] = [now]
            if reply_ids is not None:
                if not reply_ids:
                    return 0
                marks = ",".join("?" * len(reply_ids))
                sql += f" AND (id IN ({marks}) OR msg_id IN ({marks}))"
                params.extend(reply_ids)
                params.extend(reply_ids)
            return conn.execute(sql, params).rowcount

        n: int = await self._write(write)
        if n:
            _wake()
        return n

    async def reply_stats(self) -> dict[str, int]:
        rows = await self._read("SELECT state, COUNT(*) AS n FROM reply_outbox GROUP BY state")
        return {r["state"]: r["n"] for r in rows}

    async def set_banner(self, queue: str, text: str, *, by: str) -> None:
        now = time.time()

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO reply_banners (queue, text, set_at, set_by) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(queue) DO UPDATE SET text = excluded.text,"
                " set_at = excluded.set_at, set_by = excluded.set_by",
                (queue, text, now, by),
            )

        await self._write(write)

    async def clear_banner(self, queue: str) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM reply_banners WHERE queue = ?", (queue,)).rowcount > 0

        cleared: bool = await self._write(write)
        return cleared

    async def list_banners(self) -> list[Banner]:
        rows = await self._read(
            "SELECT queue, text, set_at, set_by FROM reply_banners ORDER BY queue"
        )
        return [banner(r) for r in rows]
