"""Records, intents and ports of the auto-reply area: the reply outbox, its limits, banners.

The ``respond`` stage decides and renders an acknowledgement; it leaves as a `ReplyIntent`
applied in the transaction that stores the processed envelope, so a reply is queued exactly
when its message is processed and a replayed run cannot queue it twice (one reply per
message). The applier re-checks the rate limits inside that transaction: two worker processes
racing past the stage's look-up still cannot exceed them (the loser is kept as ``suppressed``
with its reason, never sent).

The SMTP outbox worker (``delivery/smtp_out.py``) claims due rows, signs and sends them, and
records each attempt; a permanent failure (5xx) or a spent retry schedule moves a row to
``dead`` (the reply DLQ, ``mailgate outbox list --state dead``, ``mailgate outbox retry``).

What this module does not own: SMTP (``delivery/smtp_out.py``), templates (``reply/``), SQL
(``sqlite_replies.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from mailgate.store.base import Intent
from mailgate.store.notify import Notifier

REPLY_STATES = ("pending", "sent", "dead", "suppressed")


def recipient_domain(address: str) -> str:
    """The domain of a return path, lower-cased: what ``per_domain_limit`` counts."""
    return address.rpartition("@")[2].strip().rstrip(".").lower()


def limit_keys(recipient: str) -> tuple[str, str]:
    """The return path and its domain as the reply limits count them (before any hashing)."""
    return recipient.lower(), recipient_domain(recipient)


def reply_id_for(msg_id: str) -> str:
    """The outbox id of the acknowledgement of a message: ``rpl_`` + the message's ULID."""
    ulid = msg_id.split("_", 1)[1] if "_" in msg_id else msg_id
    return f"rpl_{ulid}"


@dataclass(frozen=True)
class ReplyIntent(Intent):
    """Queue one rendered acknowledgement for the SMTP outbox.

    ``draft`` is the reply as ``reply.compose.ReplyDraft`` JSON (headers and rendered bodies);
    the SMTP worker builds, signs and sends the RFC 5322 message from it.

    ``recipient`` is the envelope return path of the acknowledged message (RFC 3834 section
    4: never a From or Reply-To the sender chose); ``mail_from`` is the envelope sender of the
    reply, empty for the null sender ``MAIL FROM:<>``. The limits are re-checked when the
    intent is applied (0 means no limit). The limits per return path and per recipient domain
    count every tenant's replies: a forged victim gets no more acknowledgements by being sent to
    many tenants. When the applier suppresses the reply, it rewrites the ``reply`` field of the
    stored envelope, so the envelope never says ``queued`` for a reply that will not leave.
    """

    reply_id: str
    tenant: str
    recipient: str
    mail_from: str
    draft: str
    message_id: str
    template: str
    subject: str = ""
    thread_id: str | None = None
    ticket: str | None = None
    queue: str | None = None
    per_thread_limit: int = 0
    per_sender_limit: int = 0
    per_sender_window: float = 86400.0
    per_domain_limit: int = 0
    global_hourly_cap: int = 0
    smtputf8: bool = False
    at: float = 0.0
    stored: Mapping[str, str] | None = field(default=None, compare=False, repr=False)
    """The outbox columns as the store keeps them when encryption at rest is on (recipient,
    mail_from, subject and draft sealed, the limits' keys hashed); None: `stored_columns`."""


def stored_columns(intent: ReplyIntent) -> Mapping[str, str]:
    """The reply outbox columns an intent writes (and the limit keys it is counted under)."""
    if intent.stored is not None:
        return intent.stored
    key, domain = limit_keys(intent.recipient)
    return {
        "recipient": intent.recipient,
        "recipient_key": key,
        "recipient_domain": domain,
        "mail_from": intent.mail_from,
        "subject": intent.subject,
        "draft": intent.draft,
    }


@dataclass(frozen=True)
class ReplyUsage:
    """What the rate limits need: replies already queued or sent (suppressed ones do not count)."""

    thread: int
    """Replies to this thread, ever."""
    sender: int
    """Replies (of any tenant) to this recipient since the start of the sender window."""
    hour: int
    """Replies in all, during the last hour."""
    existing: str | None = None
    """The state of this message's own reply when it already has one (a replayed run)."""
    domain: int = 0
    """Replies (of any tenant) to this recipient's domain since the start of the sender window."""


@dataclass(frozen=True)
class Banner:
    """An incident message added to every reply of a queue (``queue`` empty: every queue)."""

    queue: str
    text: str
    set_at: float
    set_by: str


@dataclass(frozen=True)
class ReplyItem:
    """One claimed outbox row: everything the SMTP worker needs to send it."""

    id: str
    msg_id: str
    tenant: str
    recipient: str
    mail_from: str
    draft: str
    message_id: str
    attempts: int
    smtputf8: bool = False


@dataclass(frozen=True)
class ReplyRecord:
    """An outbox row as operators see it (``mailgate outbox list|show``)."""

    id: str
    msg_id: str
    tenant: str
    thread_id: str | None
    ticket: str | None
    queue: str | None
    template: str
    recipient: str
    mail_from: str
    message_id: str
    subject: str | None
    state: str
    reason: str | None
    attempts: int
    created_at: float
    next_attempt_at: float | None
    sent_at: float | None
    dead_at: float | None
    last_code: int | None
    last_error: str | None
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "msgId": self.msg_id,
            "tenant": self.tenant,
            "threadId": self.thread_id,
            "ticket": self.ticket,
            "queue": self.queue,
            "template": self.template,
            "recipient": self.recipient,
            "mailFrom": self.mail_from,
            "messageId": self.message_id,
            "subject": self.subject,
            "state": self.state,
            "reason": self.reason,
            "attempts": self.attempts,
            "createdAt": self.created_at,
            "nextAttemptAt": self.next_attempt_at,
            "sentAt": self.sent_at,
            "deadAt": self.dead_at,
            "lastCode": self.last_code,
            "lastError": self.last_error,
            "history": list(self.history),
        }


@dataclass(frozen=True)
class ReplyAttempt:
    """How one send attempt ended: ``sent``, ``retry`` (at ``next_attempt_at``), ``dead``, or
    ``skipped`` (never sendable as it stands, e.g. an SMTPUTF8 return path and a smarthost
    without SMTPUTF8: the row is suppressed with ``reason``)."""

    outcome: str
    code: int | None = None
    error: str | None = None
    next_attempt_at: float | None = None
    reason: str | None = None


# --------------------------------------------------------------------------- ports


@runtime_checkable
class ReplyPorts(Protocol):
    """Read-only look-ups the ``respond`` stage makes (the SQLite store implements them)."""

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
        """Counts for the rate limits, and this message's own reply state if it has one.

        ``tenant`` is informational: the sender and domain counts span every tenant.
        """

    async def reply_banners(self, queue: str | None) -> list[Banner]:
        """The banners that apply to a queue: its own first, then the one for every queue."""


class ReplyStore(Protocol):
    """What the SMTP outbox worker and the ``outbox``/``banner`` commands ask of storage."""

    @property
    def notifier(self) -> Notifier:
        """Wake-ups when rows of this area were committed (``store.notify``)."""

    async def claim_replies(
        self, limit: int, *, owner: str, lease: float, now: float | None = None
    ) -> list[ReplyItem]:
        """Due pending rows, oldest first, leased to ``owner`` for ``lease`` seconds."""

    async def finish_reply(self, item: ReplyItem, result: ReplyAttempt, *, owner: str) -> None:
        """Record the attempt and move the row on (sent / retry / dead)."""

    async def release_reply_leases(self, owner: str) -> int: ...

    async def next_reply_due_at(self) -> float | None: ...

    async def list_replies(
        self, *, state: str | None = None, limit: int = 50
    ) -> list[ReplyRecord]: ...

    async def get_reply(self, reply_id: str) -> ReplyRecord: ...

    async def get_reply_draft(self, reply_id: str) -> str:
        """The stored draft (``ReplyDraft`` JSON) by outbox id or message id."""

    async def retry_replies(self, reply_ids: list[str] | None) -> int:
        """Dead rows back to pending, due now; ``None`` retries every dead row."""

    async def set_banner(self, queue: str, text: str, *, by: str) -> None: ...

    async def clear_banner(self, queue: str) -> bool: ...

    async def list_banners(self) -> list[Banner]: ...
