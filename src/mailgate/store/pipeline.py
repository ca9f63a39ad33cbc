"""Records, intents and read ports of the pipeline area: dedup index, threads, quarantine, audit.

Pipeline stages never see SQL. They read through `PipelinePorts` (narrow, read-only lookups
the store implements) and express writes as intents below; the store applies those intents in
the transaction that stores the processed envelope (``MessageStore.complete``), so an index row
exists exactly when its message is processed, and a retried run cannot write twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from mailgate.store.base import Intent, StoreError


class DedupConflict(StoreError):
    """Another message claimed the same dedup key between this run's lookup and its commit.

    Raised inside the transaction, so nothing of this run is stored; the ingest worker records a
    failed attempt and runs the message again, and that run sees the winner and marks the message
    ``duplicateOf`` it (the first message wins, also across worker processes).
    """


class ThreadConflict(DedupConflict):
    """Another worker (maybe on another node) created the same thread, or took its ticket,
    between this run's lookup and its commit. Handled like a dedup conflict: nothing of this
    run is stored, the run is retried and finds the winner."""


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class DedupHit:
    """The first message seen with a dedup key."""

    msg_id: str
    seen_at: float


@dataclass(frozen=True)
class ThreadRef:
    """A stored thread, as the thread stage needs it to decide whether a message belongs to it."""

    thread_id: str
    ticket: str | None
    contact: str
    participants: frozenset[str]
    message_id: str | None = None
    """The Message-ID through which it was found (In-Reply-To/References lookups)."""
    awaited: bool = False
    """Found through a placeholder: a reply named this Message-ID before its message was
    stored, and started this thread (see ``ThreadIntent.awaits``)."""
    index: Callable[[str], str] = field(default=str, compare=False, repr=False)
    """How the store keeps ``contact`` and ``participants``: as they are, or as keyed hashes
    when encryption at rest is on (``NullCodec.index``); `admits` hashes the sender alike."""

    def admits(self, sender: str) -> bool:
        """True when ``sender`` (normalised) started the thread or is one of its participants;
        rows stored before encryption was turned on keep plain addresses and still match."""
        if not sender:
            return False
        if sender == self.contact or sender in self.participants:
            return True
        hashed = self.index(sender)
        return hashed == self.contact or hashed in self.participants


@dataclass(frozen=True)
class QuarantineRecord:
    msg_id: str
    tenant: str
    reason: str
    detail: str
    created_at: float
    released_at: float | None
    released_by: str | None
    mail_from: str
    subject: str | None
    state: str


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at: float
    actor: str
    action: str
    target: str
    detail: dict[str, Any]


# --------------------------------------------------------------------------- intents


@dataclass(frozen=True)
class DedupIntent(Intent):
    """Remember ``key`` for ``tenant`` as first seen in this message (unless a live entry exists).

    ``window`` (seconds) is how long an entry counts: an entry older than that is replaced.
    """

    tenant: str
    key: str
    seen_at: float
    window: float


@dataclass(frozen=True)
class ThreadIntent(Intent):
    """Attach a message to a thread, creating the thread when ``is_new``.

    ``message_id`` (the RFC 5322 Message-ID, may be None) becomes findable by later
    In-Reply-To/References lookups; ``participants`` are added to the thread's contact scope.
    The auto-reply area may emit one for the Message-ID of a reply it sends, so that the
    customer's answer to an acknowledgement threads by In-Reply-To as well.
    """

    tenant: str
    thread_id: str
    ticket: str | None
    is_new: bool
    message_id: str | None
    sender: str
    participants: tuple[str, ...] = ()
    subject: str | None = None
    at: float = 0.0
    awaits: str | None = None
    """A new thread's In-Reply-To that is not stored (yet): its original may be in flight on
    another worker or node. The store claims that Message-ID for this thread with a
    placeholder, so the original joins this thread when it is stored — and if the original (or
    another reply naming it) got there first, the claim conflicts and this run is retried
    (``ThreadConflict``), finding it. Unique keys, not timing, decide."""
    refused: str | None = None
    """The thread of a placeholder for this message's own Message-ID that the stage saw and
    refused (its sender is no participant): the message takes the Message-ID over for its new
    thread instead of conflicting — nobody can claim someone else's Message-ID in advance."""


@dataclass(frozen=True)
class QuarantineIntent(Intent):
    """Hold the message for an operator (it keeps its raw bytes and is not delivered)."""

    tenant: str
    reason: str
    detail: str = ""
    at: float = 0.0


@dataclass(frozen=True)
class AuditIntent(Intent):
    """One operator action, written in the transaction of the change it records."""

    actor: str
    action: str
    target: str
    detail: dict[str, Any] = field(default_factory=dict)
    at: float = 0.0


# --------------------------------------------------------------------------- ports


class PipelinePorts(Protocol):
    """The read-only lookups pipeline stages may make (the SQLite store implements them).

    Every lookup is scoped to a tenant: one tenant's messages never thread onto or deduplicate
    against another's.
    """

    async def find_duplicate(self, tenant: str, key: str, since: float) -> DedupHit | None:
        """The first message seen with ``key`` at or after ``since`` (epoch seconds), if any."""

    async def find_threads(self, tenant: str, message_ids: Sequence[str]) -> list[ThreadRef]:
        """Threads holding any of these Message-IDs (one ref per id found, ``message_id`` set)."""

    async def find_thread_by_ticket(self, tenant: str, ticket: str) -> ThreadRef | None:
        """The thread with this ticket number (``T-1042``), if any."""

    async def message_seq(self, msg_id: str) -> int | None:
        """The message's number in its tenant's own sequence (new tickets are numbered by it).

        Per tenant, so ticket numbers reveal nothing about other tenants' volume.
        """

    async def get_envelope(self, msg_id: str) -> dict[str, Any]:
        """The processed envelope of a stored message (empty when not processed yet)."""

    async def attachment_bytes(self, sha256: str) -> bytes | None:
        """The stored bytes of an attachment, or None when they were not kept."""
