"""Backend-neutral pieces of the replies area that both store backends call.

Why: the SQLite and PostgreSQL reply outboxes hold the same rows and make the same decisions;
only their SQL differs. The envelope correction of a suppressed reply and the row-to-record
mappings live here once, so the two backends cannot drift.

What this module does not own: SQL or connections (``sqlite_replies``, ``postgres/replies``).
"""

from __future__ import annotations

from typing import Any

from mailgate.store.replies import Banner, ReplyIntent, ReplyItem, ReplyRecord, ReplyUsage
from mailgate.store.rows import Row

COUNTED = "state <> 'suppressed'"
"""The rows a rate limit counts: a suppressed reply was never sent."""

_DETAILS = {
    "thread-limit": "acknowledgement(s) already in this thread",
    "sender-limit": "acknowledgement(s) to this return path in the window, all tenants",
    "domain-limit": "acknowledgement(s) to this recipient domain in the window, all tenants",
    "global-cap": "acknowledgements in the last hour",
}

RECORD_COLS = (
    "id, msg_id, tenant, thread_id, ticket, queue, template, recipient, mail_from, message_id,"
    " subject, state, reason, attempts, created_at, next_attempt_at, sent_at, dead_at,"
    " last_code, last_error"
)


def suppressed_decision(intent: ReplyIntent, reason: str) -> dict[str, Any]:
    """The envelope's ``reply`` field once the store suppressed the reply over ``reason``."""
    return {
        "queued": False,
        "sent": False,
        "reason": reason,
        "detail": f"suppressed when stored: {_DETAILS.get(reason, reason)}",
        "template": intent.template,
        "outboxId": intent.reply_id,
        "to": intent.recipient,
    }


def reply_record(row: Row, history: list[dict[str, Any]] | None = None) -> ReplyRecord:
    """A ``RECORD_COLS`` row; the next attempt only shows while the reply is pending."""
    return ReplyRecord(
        id=row["id"],
        msg_id=row["msg_id"],
        tenant=row["tenant"],
        thread_id=row["thread_id"],
        ticket=row["ticket"],
        queue=row["queue"],
        template=row["template"],
        recipient=row["recipient"],
        mail_from=row["mail_from"],
        message_id=row["message_id"],
        subject=row["subject"],
        state=row["state"],
        reason=row["reason"],
        attempts=row["attempts"],
        created_at=row["created_at"],
        next_attempt_at=row["next_attempt_at"] if row["state"] == "pending" else None,
        sent_at=row["sent_at"],
        dead_at=row["dead_at"],
        last_code=row["last_code"],
        last_error=row["last_error"],
        history=history or [],
    )


def banner(row: Row) -> Banner:
    """A ``reply_banners`` row."""
    return Banner(queue=row["queue"], text=row["text"], set_at=row["set_at"], set_by=row["set_by"])


def reply_item(r: Row) -> ReplyItem:
    """A claimed ``reply_outbox`` row as the SMTP worker sees it."""
    return ReplyItem(
        id=r["id"],
        msg_id=r["msg_id"],
        tenant=r["tenant"],
        recipient=r["recipient"],
        mail_from=r["mail_from"],
        draft=r["draft"],
        message_id=r["message_id"],
        attempts=r["attempts"],
        smtputf8=bool(r["smtputf8"]),
    )


def reply_usage(row: Row, thread_id: str | None) -> ReplyUsage:
    """The usage counts row (thread, sender, domain, hour, existing); no thread counts 0."""
    return ReplyUsage(
        thread=row["thread"] if thread_id else 0,
        sender=row["sender"],
        hour=row["hour"],
        existing=row["existing"],
        domain=row["domain"],
    )
