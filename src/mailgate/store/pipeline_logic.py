"""Backend-neutral pieces of the pipeline area that both store backends call.

Why: the SQLite and PostgreSQL backends index threads and keep quarantine and audit rows the
same way; only their SQL differs. How a Message-ID is normalized for the index, how stored
participants are read back, and how rows become records live here once.

What this module does not own: SQL or connections (``sqlite_pipeline``, ``postgres/pipeline``).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from mailgate.store.pipeline import AuditRecord, QuarantineRecord, ThreadRef
from mailgate.store.rows import Row


def strip_mid(message_id: str) -> str:
    """A Message-ID as the thread index keys it: without blanks and angle brackets."""
    return message_id.strip().strip("<>").strip()


def read_participants(raw: str | None) -> frozenset[str]:
    """A thread's stored participants (a JSON list); anything unreadable is no one."""
    if not raw:
        return frozenset()
    try:
        value = json.loads(raw)
    except ValueError:
        return frozenset()
    return frozenset(str(v) for v in value) if isinstance(value, list) else frozenset()


def thread_ref(r: Row, message_id: str, index: Callable[[str], str] = str) -> ThreadRef:
    """A ``thread_messages`` row joined with its thread; ``message_id`` as the caller knows it;
    ``index``: how the store hashed the thread's addresses (see `ThreadRef.index`)."""
    return ThreadRef(
        thread_id=r["id"],
        ticket=r["ticket"],
        contact=r["contact"],
        participants=read_participants(r["participants"]),
        message_id=message_id,
        awaited=not r["msg_id"],
        index=index,
    )


def quarantine_record(r: Row) -> QuarantineRecord:
    """A quarantine row joined with its message (mail_from, subject, state)."""
    return QuarantineRecord(
        msg_id=r["msg_id"],
        tenant=r["tenant"],
        reason=r["reason"],
        detail=r["detail"],
        created_at=r["created_at"],
        released_at=r["released_at"],
        released_by=r["released_by"],
        mail_from=r["mail_from"],
        subject=r["subject"],
        state=r["state"],
    )


def audit_record(r: Row) -> AuditRecord:
    """An ``audit_log`` row; its detail is stored as JSON."""
    return AuditRecord(
        id=r["id"],
        at=r["at"],
        actor=r["actor"],
        action=r["action"],
        target=r["target"],
        detail=json.loads(r["detail"] or "{}"),
    )
