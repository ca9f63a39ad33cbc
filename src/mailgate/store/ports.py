"""The store port: everything a node asks of storage, whichever backend holds it.

A node is one ``mailgate serve`` (its front and its worker processes). Several nodes may share
one store (PostgreSQL); then every piece of work is *claimed with a lease*: a claim writes the
owner (``node:pid:nonce``) and an expiry, other owners skip the row until the lease runs out,
and a node that dies mid-work leaves its rows to another node after the lease. SQLite (one
node) uses the same claims, so both backends share one behaviour and one contract test.

Per-area records, intents and narrower protocols live beside this file (``base``, ``pipeline``,
``delivery``, ``replies``, ``models``); this module composes them into ``Store`` and adds the
two cross-cutting ports: spool claims and the ``Notifier`` (wake-ups between writers and
workers: in-process callbacks for SQLite, ``LISTEN/NOTIFY`` for PostgreSQL).

Only ``app.build_store`` names a backend.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mailgate.store.base import Intent, MessageStore, Spool, SpooledMessage
from mailgate.store.delivery import DeliveryStore
from mailgate.store.models import ModelStore
from mailgate.store.notify import CHANNELS, OUTBOX, REPLIES, SPOOL, Notifier
from mailgate.store.pipeline import AuditRecord, PipelinePorts, QuarantineRecord
from mailgate.store.replies import ReplyPorts, ReplyStore

__all__ = [
    "CHANNELS",
    "DEFAULT_SPOOL_LEASE",
    "OUTBOX",
    "REPLIES",
    "SPOOL",
    "AuditStore",
    "Lifecycle",
    "Notifier",
    "QuarantineStore",
    "ReplayStore",
    "SchemaAdmin",
    "SchemaStatus",
    "SpoolClaims",
    "Store",
    "lease_owner",
    "node_name",
    "owner_is_dead_local",
    "pid_alive",
]

DEFAULT_SPOOL_LEASE = 60.0
"""Seconds a claimed spooled message stays with its owner; a batch takes far less, and a node
that died leaves the message to another node after this long."""


def lease_owner(node: str | None = None) -> str:
    """A unique owner id ``node:pid:nonce`` for one worker's claims (one per worker start).

    The pid lets a restarted worker on the same node release the leases of its dead
    predecessor at once (see ``release_dead_local``) instead of waiting for them to expire.
    """
    return f"{node or socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def node_name(store: object = None, node: str | None = None) -> str:
    """This node's name for lease owners and metrics keys: ``node`` when given (``[store]
    node``), else the store's own (a PostgreSQL store knows its configured node), else the host
    name. Two nodes on one host must not share it: each would take the other's live leases
    for those of a dead process of its own."""
    return node or str(getattr(store, "node", "") or "") or socket.gethostname()


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs on this host (a zombie nobody reaped counts as gone)."""
    if pid == os.getpid():
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_is_dead_local(owner: str, node: str, alive: Callable[[int], bool] = pid_alive) -> bool:
    """True when ``owner`` names a process of this node that no longer runs."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != node or not parts[1].isdigit():
        return False
    return not alive(int(parts[1]))


class SpoolClaims(Protocol):
    """Spooled messages claimed with leases (any number of workers on any number of nodes)."""

    async def claim_spooled(
        self, limit: int, *, owner: str, lease: float = DEFAULT_SPOOL_LEASE, skip: int = 0
    ) -> list[SpooledMessage]:
        """Up to ``limit`` spooled messages nobody holds (or whose lease expired), oldest
        first, leased to ``owner``. A row is claimed by one owner at a time. ``skip``: leave
        the ``skip`` oldest such messages to others (an extra worker takes only a backlog)."""

    async def release_spool_leases(self, owner: str) -> int:
        """Give back every spooled message ``owner`` holds (shutdown, or a dead predecessor)."""

    async def spool_lease_owners(self) -> list[str]:
        """Owners holding leases on spooled messages now."""


class QuarantineStore(Protocol):
    """What the ``quarantine`` CLI and API ask of storage."""

    async def list_quarantine(
        self,
        *,
        reason: str | None = None,
        tenant: str | None = None,
        include_released: bool = False,
        limit: int = 100,
    ) -> list[QuarantineRecord]: ...

    async def get_quarantine(self, msg_id: str) -> QuarantineRecord: ...

    async def release_quarantined(
        self, msg_id: str, envelope: dict[str, Any], intents: list[Intent], *, actor: str
    ) -> None: ...

    async def delete_quarantined(self, msg_id: str, *, actor: str) -> None: ...


class ReplayStore(Protocol):
    """What ``mailgate replay`` and ``messages show`` ask of storage."""

    async def list_replayable(
        self,
        *,
        since: float | None = None,
        ids: Sequence[str] = (),
        tenant: str | None = None,
        limit: int = 100_000,
    ) -> list[str]: ...

    async def list_dead(
        self,
        *,
        since: float | None = None,
        ids: Sequence[str] = (),
        tenant: str | None = None,
        limit: int = 100_000,
    ) -> list[str]: ...

    async def requeue_dead(self, msg_id: str, *, actor: str) -> None: ...

    async def update_decision(
        self,
        msg_id: str,
        envelope: dict[str, Any],
        intents: list[Intent],
        *,
        actor: str,
        detail: dict[str, Any],
    ) -> None: ...

    async def get_message_row(self, msg_id: str) -> dict[str, Any]: ...


class AuditStore(Protocol):
    async def record_audit(
        self, actor: str, action: str, target: str, detail: dict[str, Any] | None = None
    ) -> None: ...

    async def list_audit(
        self, *, limit: int = 100, action: str | None = None, since: float | None = None
    ) -> list[AuditRecord]: ...


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database's schema stands against what this mailgate knows."""

    current: int  # highest applied version (0: empty or no database)
    latest: int  # highest version this mailgate knows
    applied: list[str]
    pending: list[str]

    @property
    def newer(self) -> bool:
        """The database was migrated by a newer mailgate: this one must not write into it."""
        return self.current > self.latest


class SchemaAdmin(Protocol):
    """``mailgate db status|migrate``; work on a store that was not opened."""

    async def schema_status(self) -> SchemaStatus: ...

    async def migrate(self) -> list[str]:
        """Apply the missing migrations; refuses a newer schema (``StoreError``)."""


class Lifecycle(Protocol):
    @property
    def notifier(self) -> Notifier: ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> bool:
        """True when the database answers (``/readyz``)."""


class Store(
    Spool,
    MessageStore,
    SpoolClaims,
    PipelinePorts,
    QuarantineStore,
    ReplayStore,
    AuditStore,
    DeliveryStore,
    ReplyPorts,
    ReplyStore,
    ModelStore,
    SchemaAdmin,
    Lifecycle,
    Protocol,
):
    """Everything one node asks of storage; ``SqliteStore`` and ``PostgresStore`` implement it."""
