"""Backend-neutral row mappings of the messages table that both store backends call.

Why: a spooled message and a message summary read the same columns on SQLite and PostgreSQL
(recipients and auth results stored as JSON); one mapping keeps the two backends alike.
"""

from __future__ import annotations

import json

from mailgate.store.base import MessageSummary, SpooledMessage
from mailgate.store.rows import Row


def spooled_message(r: Row) -> SpooledMessage:
    """A claimed ``messages`` row joined with its raw bytes."""
    return SpooledMessage(
        id=r["id"],
        received_at=r["received_at"],
        tenant=r["tenant"],
        mail_from=r["mail_from"],
        rcpt_to=json.loads(r["rcpt_to"]),
        client_ip=r["client_ip"],
        helo=r["helo"],
        tls=bool(r["tls"]),
        trace_id=r["trace_id"],
        auth=json.loads(r["auth"]) if r["auth"] else None,
        raw=bytes(r["raw"]),
        attempts=r["attempts"],
    )


def message_summary(r: Row) -> MessageSummary:
    """A ``messages`` row as the listing shows it."""
    return MessageSummary(
        id=r["id"],
        received_at=r["received_at"],
        tenant=r["tenant"],
        mail_from=r["mail_from"],
        rcpt_to=json.loads(r["rcpt_to"]),
        size=r["size"],
        state=r["state"],
        subject=r["subject"],
        attempts=r["attempts"],
        last_error=r["last_error"],
    )
