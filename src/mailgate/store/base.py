"""Store protocols and plain records: what the rest of mailgate may ask of storage.

Only ``app.py`` names a concrete backend (``store.sqlite``). The SMTP handler sees a ``Spool``,
the ingest worker a ``MessageStore``; pipeline stages never see a store at all, only the
read-only ports the runner hands them, and they express writes as *intents* (records below)
that the store applies in the same transaction as the processed envelope.

Per-area protocols and intents live beside this file: ``store/pipeline.py`` (dedup, threads,
quarantine), ``store/delivery.py`` (events, webhook outbox, DLQ), ``store/replies.py``
(auto-reply outbox).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class StoreError(Exception):
    """The store could not do what was asked (disk full, locked too long, corrupt)."""


class NotFound(StoreError):
    """No record with that id."""


@dataclass(frozen=True)
class SpoolRecord:
    """Everything known about one accepted message at the moment of the 250."""

    id: str
    received_at: float
    mail_from: str
    rcpt_to: list[str]
    client_ip: str
    helo: str
    tls: bool
    raw: bytes
    tenant: str = "default"
    trace_id: str = ""
    auth: dict[str, Any] | None = None
    smtp: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MessageSummary:
    id: str
    received_at: float
    tenant: str
    mail_from: str
    rcpt_to: list[str]
    size: int
    state: str
    subject: str | None
    attempts: int
    last_error: str | None


@dataclass(frozen=True)
class SpooledMessage:
    """A spooled row handed to the ingest worker."""

    id: str
    received_at: float
    tenant: str
    mail_from: str
    rcpt_to: list[str]
    client_ip: str
    helo: str
    tls: bool
    trace_id: str
    auth: dict[str, Any] | None
    raw: bytes
    attempts: int


class Intent:
    """Base of every write a pipeline run asks for; applied by the store in one transaction.

    Concrete intents are frozen dataclasses defined per area; the SQLite backend keeps a
    registry ``type -> applier`` so each area adds its own without touching the core.
    """


MESSAGE_STATES = ("spooled", "processed", "quarantined", "dead")


class Spool(Protocol):
    async def spool(self, *records: SpoolRecord) -> None:
        """Commit the records durably, all or none; return only after the commit (then 250)."""


class MessageStore(Protocol):
    async def claim_spooled(
        self, limit: int, *, owner: str, lease: float = 60.0, skip: int = 0
    ) -> list[SpooledMessage]:
        """Up to ``limit`` spooled messages no live lease holds, oldest first, leased to
        ``owner`` for ``lease`` seconds (see ``store.ports``: any worker of any node)."""

    async def complete(
        self, msg_id: str, envelope: dict[str, Any], intents: list[Intent], *, state: str
    ) -> None:
        """Store the envelope, set the state and apply every intent, in one transaction.

        Idempotent: completing an already-processed message again changes nothing.
        """

    async def fail(self, msg_id: str, error: str, *, max_attempts: int) -> str:
        """Record a processing failure; returns the new state (``spooled`` to retry or ``dead``)."""

    async def get_envelope(self, msg_id: str) -> dict[str, Any]: ...

    async def get_raw(self, msg_id: str) -> bytes: ...

    async def list_messages(
        self, *, limit: int = 50, state: str | None = None, tenant: str | None = None
    ) -> list[MessageSummary]: ...
