"""Backend-neutral pieces of the delivery area that both store backends call.

Why: the SQLite and PostgreSQL backends keep the same event log, outbox and metrics; what
differs is the SQL. Mapping rows to records, the attachment index rows, and which metric
counters an attempt moves are one decision, kept here so the two backends cannot drift.

What this module does not own: SQL or connections (``sqlite_delivery``, ``postgres/delivery``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from mailgate.store.delivery import (
    ACCEPT_TO_DELIVERED_BUCKETS,
    ATTEMPT_BUCKETS,
    AttachmentRecord,
    AttemptOutcome,
    DlqEntry,
    EventRecord,
    OutboxItem,
    OutboxStats,
)
from mailgate.store.rows import Row

Bump = tuple[str, str, float]
"""A counter to add to: metric name, encoded labels, amount."""

EVENT_COLS = (
    "e.seq, e.id, e.msg_id, e.tenant, e.type, e.ordering_key, e.trace_id, e.received_at,"
    " e.created_at, e.delivered_at, e.acked_at, e.acked_by, m.envelope"
)
DLQ_COLS = (
    "o.id, o.event_id, e.msg_id, e.tenant, o.target, o.attempts, o.last_status, o.last_error,"
    " o.created_at, o.dead_at"
)


def attachment_rows(
    msg_id: str, envelope: dict[str, Any], text: Callable[[Any], str | None]
) -> list[tuple[Any, ...]]:
    """The attachment index rows of an envelope: those with an id and a digest.

    ``text`` makes a value bindable by the backend (each has its own limits on strings)."""
    return [
        (
            text(a["id"]),
            msg_id,
            text(a["sha256"]),
            text(a.get("filename")),
            text(a.get("contentType")),
            a.get("size") if isinstance(a.get("size"), int) else None,
        )
        for a in envelope.get("attachments") or []
        if isinstance(a, dict) and a.get("id") and a.get("sha256")
    ]


def labels(**labels: str) -> str:
    """Metric labels as stored: JSON with sorted keys, so one label set is one row."""
    return _labels_json(tuple(sorted(labels.items())))


@functools.lru_cache(maxsize=4096)
def _labels_json(items: tuple[tuple[str, str], ...]) -> str:
    """A delivered webhook moves seven counters over a few label sets: encoded once each."""
    return json.dumps(dict(items), sort_keys=True, separators=(",", ":"))


def observe(name: str, buckets: tuple[float, ...], value: float, **labels_: str) -> list[Bump]:
    """One histogram observation: its (non-cumulative) bucket, the sum and the count."""
    le = next((b for b in buckets if value <= b), None)
    return [
        (f"{name}_bucket", labels(**labels_, le=repr(le) if le is not None else "+Inf"), 1.0),
        (f"{name}_sum", labels(**labels_), value),
        (f"{name}_count", labels(**labels_), 1.0),
    ]


def metric_bumps(item: OutboxItem, result: AttemptOutcome, now: float) -> list[Bump]:
    """The counters one finished attempt moves."""
    out: list[Bump] = [
        ("webhook_deliveries", labels(target=item.target, outcome=result.outcome), 1.0)
    ]
    if result.outcome in ("skipped", "released"):
        return out
    out += observe("webhook_attempt_seconds", ATTEMPT_BUCKETS, result.latency, target=item.target)
    if result.outcome == "delivered":
        out += observe(
            "accept_to_delivered_seconds",
            ACCEPT_TO_DELIVERED_BUCKETS,
            max(0.0, now - item.received_at),
        )
    return out


def outbox_item(r: Row, envelope_json: str) -> OutboxItem:
    """A claimed outbox row (joined with its event) as the webhook worker sees it."""
    return OutboxItem(
        id=r["id"],
        event_id=r["event_id"],
        event_type=r["type"],
        msg_id=r["msg_id"],
        tenant=r["tenant"],
        target=r["target"],
        ordering_key=r["ordering_key"],
        attempts=r["attempts"],
        client_errors=r["client_errors"],
        trace_id=r["trace_id"],
        received_at=r["received_at"],
        created_at=r["created_at"],
        envelope_json=envelope_json,
        acked_by=r["acked_by"],
    )


def event_record(
    row: Row, envelope_json: str, deliveries: list[dict[str, Any]] | None = None
) -> EventRecord:
    """An ``EVENT_COLS`` row; ``envelope_json`` is the envelope as the backend opened it."""
    return EventRecord(
        seq=row["seq"],
        id=row["id"],
        msg_id=row["msg_id"],
        tenant=row["tenant"],
        type=row["type"],
        ordering_key=row["ordering_key"],
        trace_id=row["trace_id"],
        received_at=row["received_at"],
        created_at=row["created_at"],
        delivered_at=row["delivered_at"],
        acked_at=row["acked_at"],
        acked_by=row["acked_by"],
        envelope_json=envelope_json,
        deliveries=deliveries or [],
    )


def dlq_entry(row: Row, history: list[dict[str, Any]] | None = None) -> DlqEntry:
    """A ``DLQ_COLS`` row, with its attempt history when asked for one entry."""
    return DlqEntry(
        id=row["id"],
        event_id=row["event_id"],
        msg_id=row["msg_id"],
        tenant=row["tenant"],
        target=row["target"],
        attempts=row["attempts"],
        last_status=row["last_status"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        dead_at=row["dead_at"],
        history=history or [],
    )


def attachment_record(row: Row) -> AttachmentRecord:
    """An ``attachments`` row."""
    return AttachmentRecord(
        id=row["id"],
        msg_id=row["msg_id"],
        sha256=row["sha256"],
        filename=row["filename"],
        content_type=row["content_type"],
        size=row["size"],
    )


def outbox_stats(row: Row | None, now: float) -> OutboxStats:
    """The outbox counts row (pending, due, dead, oldest_due, oldest_pending) as ages at ``now``."""
    if row is None:
        return OutboxStats(0, 0, 0, 0.0, 0.0)
    return OutboxStats(
        pending=row["pending"] or 0,
        due=row["due"] or 0,
        dead=row["dead"] or 0,
        oldest_due_age=max(0.0, now - row["oldest_due"]) if row["oldest_due"] else 0.0,
        oldest_pending_age=max(0.0, now - row["oldest_pending"]) if row["oldest_pending"] else 0.0,
    )
