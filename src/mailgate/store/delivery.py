"""Records and protocols of the delivery area: the event log, the webhook outbox, the DLQ.

The webhook and the polling API are two views of one durable event log: a processed message
becomes one event row (``PublishIntent``), and one outbox row per webhook target, in the
transaction that stores the envelope. An event is *consumed* once a webhook target answered
2xx or an API client acknowledged it; both views show who consumed it and when, and a pending
webhook delivery of an event already acknowledged through the API is not pushed again.

What this module does not own: HTTP (``delivery/``, ``api/``) and SQL (``sqlite_delivery``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from mailgate import jsontext
from mailgate.store.base import Intent
from mailgate.store.notify import Notifier

OUTBOX_STATES = ("pending", "delivered", "dead", "skipped")

# Histogram buckets (seconds, upper bounds) of the delivery metrics the store keeps.
ATTEMPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ACCEPT_TO_DELIVERED_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    3600.0,
    86400.0,
)


@dataclass(frozen=True)
class PublishIntent(Intent):
    """Publish the processed envelope as an event.

    ``targets`` are webhook target ids (``WebhookConfig.name``, or its URL when unnamed), already
    filtered to the message's tenant. ``ordering_key`` (the thread id) makes events of one thread
    leave in order while different threads go in parallel.
    """

    event_type: str = "message.received"
    targets: tuple[str, ...] = ()
    ordering_key: str | None = None


def webhook_target_id(name: str, url: str) -> str:
    """The outbox id of a webhook target: its configured name, else its URL."""
    return name or url


def event_id_for(msg_id: str, event_type: str = "message.received") -> str:
    """The stable event id of a message: ``evt_`` + the message's ULID.

    Re-publishing (a replayed run, a quarantine release) yields the same id, so a consumer can
    drop redeliveries by ``webhook-id``. Event types other than ``message.received`` get a
    suffix so each (message, type) pair has its own id.
    """
    ulid = msg_id.split("_", 1)[1] if "_" in msg_id else msg_id
    base = f"evt_{ulid}"
    if event_type == "message.received":
        return base
    return base + "_" + event_type.replace("message.", "").replace(".", "_")


@dataclass(frozen=True)
class OutboxItem:
    """One claimed webhook delivery, with everything the worker needs to send it."""

    id: int
    event_id: str
    event_type: str
    msg_id: str
    tenant: str
    target: str
    ordering_key: str | None
    attempts: int
    client_errors: int
    trace_id: str
    received_at: float
    created_at: float
    envelope_json: str
    """The envelope as stored (compact JSON): the webhook body is these bytes when there are no
    attachment URLs to sign, so a delivery does not decode and re-encode it."""
    acked_by: str | None = None

    @property
    def envelope(self) -> dict[str, Any]:
        """The envelope decoded (each access decodes: call once)."""
        env: dict[str, Any] = jsontext.loads(self.envelope_json) if self.envelope_json else {}
        return env


@dataclass(frozen=True)
class AttemptOutcome:
    """What one attempt ended as; the store records it and moves the outbox row on.

    ``outcome``: ``delivered`` (2xx), ``retry`` (reschedule at ``next_attempt_at``), ``dead``
    (to the DLQ), ``disabled`` (410: the row waits, the target is disabled), ``skipped`` (not
    sent: already acknowledged through the API, or an event type the target does not take),
    ``released`` (not attempted at all: the lease is given back unchanged).
    """

    outcome: str
    status: int | None = None
    latency: float = 0.0
    error: str | None = None
    next_attempt_at: float | None = None
    counts_as_client_error: bool = False


@dataclass(frozen=True)
class EventRecord:
    seq: int
    id: str
    msg_id: str
    tenant: str
    type: str
    ordering_key: str | None
    trace_id: str
    received_at: float
    created_at: float
    delivered_at: float | None
    acked_at: float | None
    acked_by: str | None
    envelope_json: str
    """The envelope as stored (compact JSON): the API returns it without decoding it."""
    deliveries: list[dict[str, Any]] = field(default_factory=list)

    @property
    def envelope(self) -> dict[str, Any]:
        """The envelope decoded (each access decodes: call once)."""
        env: dict[str, Any] = jsontext.loads(self.envelope_json) if self.envelope_json else {}
        return env


@dataclass(frozen=True)
class DlqEntry:
    """A dead outbox row (all attempts spent, or a client error) with its attempt history."""

    id: int
    event_id: str
    msg_id: str
    tenant: str
    target: str
    attempts: int
    last_status: int | None
    last_error: str | None
    created_at: float
    dead_at: float | None
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class AttachmentRecord:
    id: str
    msg_id: str
    sha256: str
    filename: str | None
    content_type: str | None
    size: int | None


@dataclass(frozen=True)
class OutboxStats:
    pending: int
    due: int
    dead: int
    oldest_due_age: float  # seconds the oldest due, undelivered row has waited (0 when none)
    oldest_pending_age: float  # age of the oldest undelivered row (the outbox lag)


class DeliveryStore(Protocol):
    """What the webhook worker, the polling API and the ``dlq`` CLI ask of storage."""

    # ---- webhook worker
    @property
    def notifier(self) -> Notifier:
        """Wake-ups when rows of this area were committed (``store.notify``)."""

    async def claim_outbox(
        self,
        target: str,
        limit: int,
        *,
        owner: str,
        lease: float,
        now: float | None = None,
        skip: int = 0,
    ) -> list[OutboxItem]:
        """Due rows of ``target`` whose earlier rows of the same ordering key are all settled,
        oldest first, leased to ``owner`` for ``lease`` seconds; ``skip``: leave the first
        that many such rows (a backlog worker takes only what waits beyond them)."""

    async def finish_attempt(self, item: OutboxItem, result: AttemptOutcome, *, owner: str) -> None:
        """Record the attempt and move the row on (delivered / retry / dead / disabled)."""

    async def release_leases(self, owner: str) -> int:
        """Give back every lease ``owner`` holds (worker shutdown)."""

    async def lease_owners(self) -> list[str]:
        """Owners holding leases on pending rows now (to find those of crashed workers)."""

    async def change_counter(self) -> int:
        """A number that changes whenever another connection or process commits a write
        (SQLite ``PRAGMA data_version``); lets an idle worker notice new rows cheaply."""

    async def next_due_at(self, targets: list[str]) -> float | None:
        """When the earliest pending row of these targets becomes due (None: nothing pending)."""

    # ---- targets
    async def disable_target(self, target: str, reason: str) -> None: ...

    async def enable_target(self, target: str) -> bool:
        """Re-enable a target; True if it was disabled."""

    async def disabled_targets(self) -> dict[str, str]:
        """target -> reason, for every disabled target."""

    # ---- event log (polling API)
    async def list_events(
        self, tenant: str, *, after_seq: int = 0, limit: int = 50, include_acked: bool = False
    ) -> list[EventRecord]: ...

    async def get_event(self, tenant: str, ref: str) -> EventRecord:
        """By event id or message id, within the tenant; raises ``NotFound``."""

    async def ack_event(self, tenant: str, ref: str, *, by: str) -> EventRecord:
        """Mark consumed (idempotent: a second ack keeps the first time); raises ``NotFound``."""

    async def get_attachment(self, att_id: str) -> AttachmentRecord: ...

    # ---- DLQ
    async def dlq_list(self, *, limit: int = 1000) -> list[DlqEntry]: ...

    async def dlq_get(self, outbox_id: int) -> DlqEntry: ...

    async def dlq_retry(self, outbox_ids: list[int] | None) -> int:
        """Back to pending, attempts reset, due now; ``None`` retries every dead row."""

    async def dlq_purge(self, older_than: float) -> int:
        """Delete dead rows that died before ``older_than`` (epoch seconds)."""

    async def outbox_stats(self, *, exclude_targets: list[str] | None = None) -> OutboxStats: ...

    # ---- metrics (kept in the store: delivery and /metrics run in different processes)
    async def delivery_metrics(self) -> list[tuple[str, dict[str, str], float]]:
        """Every stored (name, labels, value): counters, gauges and histogram buckets."""

    async def set_delivery_metric(self, name: str, labels: dict[str, str], value: float) -> None:
        """Set a stored gauge (e.g. ``webhook_breaker_open``)."""

    async def publish_process_metrics(self, key: str, exposition: str) -> None:
        """Store (replace) the Prometheus exposition of process ``key`` (``host:pid``)."""

    async def process_metrics(self) -> list[tuple[str, float, str]]:
        """(key, updated_at, exposition) of every process that published."""

    async def drop_process_metrics(self, key: str) -> None: ...
