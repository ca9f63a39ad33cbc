"""The delivery area on PostgreSQL: the event log, the webhook outbox, the DLQ, delivery metrics.

A webhook row is claimed by one node's worker at a time: ``FOR UPDATE SKIP LOCKED`` plus a lease
(``locked_until``, ``lock_owner``); a node that dies mid-delivery leaves the row to another once
the lease runs out. Per-thread order holds across nodes: a row waits while an earlier row of the
same thread and target is still pending — leased or not, on whichever node.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from mailgate.store.base import NotFound
from mailgate.store.delivery import (
    AttachmentRecord,
    AttemptOutcome,
    DlqEntry,
    EventRecord,
    OutboxItem,
    OutboxStats,
    PublishIntent,
    event_id_for,
)
from mailgate.store.delivery_logic import (
    DLQ_COLS,
    EVENT_COLS,
    attachment_record,
    attachment_rows,
    dlq_entry,
    event_record,
    metric_bumps,
    outbox_item,
    outbox_stats,
)
from mailgate.store.delivery_logic import labels as encode_labels
from mailgate.store.notify import OUTBOX
from mailgate.store.postgres.base import PgBase, applies, rowcount, text
from mailgate.store.postgres.group_commit import GroupCommit
from mailgate.store.postgres.notify import PgNotifier, pg_channel


@dataclass(frozen=True)
class _Delivered:
    """One delivered attempt waiting to be recorded."""

    item: OutboxItem
    result: AttemptOutcome
    owner: str
    now: float
    attempt: int


@applies(PublishIntent)
async def apply_publish(
    conn: asyncpg.Connection, msg_id: str, envelope: dict[str, Any], intent: PublishIntent
) -> None:
    """One event row, one outbox row per target, the attachment index; idempotent.

    One round trip whatever the number of targets: the event (its message's facts read in the
    same statement), the outbox rows and the wake-up of every node's webhook worker."""
    now = time.time()
    event_id = event_id_for(msg_id, intent.event_type)
    targets = list(dict.fromkeys(intent.targets))
    # the outbox rows' foreign key to the event is checked at the end of the statement, when
    # the event row of the sibling CTE is there; a repeated run inserts neither (ON CONFLICT)
    found = await conn.fetchval(
        "WITH m AS (SELECT id, tenant, trace_id, received_at FROM messages WHERE id = $2),"
        " ins AS (INSERT INTO events (id, msg_id, tenant, type, ordering_key, trace_id,"
        "  received_at, created_at)"
        "  SELECT $1, id, COALESCE($3, tenant), $4, $5, COALESCE($6, trace_id, ''), received_at, $7"
        "  FROM m ON CONFLICT (id) DO NOTHING),"
        " ob AS (INSERT INTO outbox (event_id, target, ordering_key, next_attempt_at, created_at)"
        "  SELECT $1, t, $5, $7, $7 FROM unnest($8::text[]) AS t WHERE EXISTS (SELECT 1 FROM m)"
        "  ON CONFLICT (event_id, target) DO NOTHING)"
        " SELECT 1 FROM m WHERE cardinality($8::text[]) = 0 OR pg_notify($9, '') IS NOT NULL",
        event_id,
        msg_id,
        envelope.get("tenant") or None,
        intent.event_type,
        intent.ordering_key,
        envelope.get("traceId") or None,
        now,
        targets,
        pg_channel(OUTBOX),
    )
    if not found:
        raise NotFound(msg_id)
    atts = attachment_rows(msg_id, envelope, text)
    if atts:
        await conn.executemany(
            "INSERT INTO attachments (id, msg_id, sha256, filename, content_type, size)"
            " VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT (id) DO NOTHING",
            atts,
        )


async def _bump(conn: asyncpg.Connection, bumps: list[tuple[str, str, float]]) -> None:
    """Add to counters in one statement (distinct keys; sorted: one lock order for every node,
    so two finishers never deadlock)."""
    rows = sorted(bumps)
    await conn.execute(
        "INSERT INTO delivery_metrics (name, labels, value)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::float8[])"
        " ON CONFLICT (name, labels) DO UPDATE SET value = delivery_metrics.value + excluded.value",
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
    )


class PgDeliveryMixin(PgBase):
    """The delivery part of `PostgresStore` (implements `store.delivery.DeliveryStore`)."""

    notifier: PgNotifier
    _delivered: GroupCommit[
        _Delivered
    ]  # delivered attempts recorded together (``_record_delivered``)

    # ------------------------------------------------------------------ webhook worker

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
        at = time.time() if now is None else now
        rows = await self._fetch(
            "WITH c AS (SELECT o.id FROM outbox o WHERE o.state = 'pending' AND o.target = $1"
            " AND o.next_attempt_at <= $2 AND o.locked_until <= $2"
            " AND (o.ordering_key IS NULL OR NOT EXISTS (SELECT 1 FROM outbox p"
            "  WHERE p.target = o.target AND p.ordering_key = o.ordering_key"
            "  AND p.state = 'pending' AND p.id < o.id))"
            " ORDER BY o.next_attempt_at, o.id LIMIT $3 OFFSET $6 FOR UPDATE OF o SKIP LOCKED),"
            " u AS (UPDATE outbox o SET locked_until = $4, lock_owner = $5 FROM c"
            "  WHERE o.id = c.id RETURNING o.*)"
            " SELECT u.id, u.event_id, e.type, e.msg_id, e.tenant, u.target, u.ordering_key,"
            " u.attempts, u.client_errors, e.trace_id, e.received_at, e.created_at, e.acked_by,"
            " m.envelope FROM u JOIN events e ON e.id = u.event_id"
            " JOIN messages m ON m.id = e.msg_id ORDER BY u.id",
            target,
            at,
            limit,
            at + lease,
            owner,
            skip,
            fast=True,
        )
        return [outbox_item(r, r["envelope"] or "{}") for r in rows]

    async def finish_attempt(self, item: OutboxItem, result: AttemptOutcome, *, owner: str) -> None:
        """Record the attempt and move the row on — only while ``owner`` holds it (or nobody
        does): a node whose lease was taken over cannot overwrite the new owner's outcome."""
        now = time.time()
        attempt = item.attempts + 1
        if result.outcome == "delivered":
            await self._finish_delivered(item, result, owner=owner, now=now, attempt=attempt)
            return
        error = text(result.error[:2000]) if result.error else None
        owned = "id = $1 AND state = 'pending' AND (lock_owner = $2 OR lock_owner IS NULL)"
        async with self.fast_pool.acquire() as conn, conn.transaction():
            if result.outcome not in ("skipped", "released"):
                await conn.execute(
                    "INSERT INTO delivery_attempts (outbox_id, attempt, at, status, latency,"
                    " error, outcome, node) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
                    item.id,
                    attempt,
                    now,
                    result.status,
                    result.latency,
                    error,
                    result.outcome,
                    owner,
                )
            if result.outcome == "delivered":
                await conn.execute(
                    "UPDATE outbox SET state = 'delivered', attempts = $3, delivered_at = $4,"
                    " last_status = $5, last_error = NULL, locked_until = 0, lock_owner = NULL"
                    f" WHERE {owned}",
                    item.id,
                    owner,
                    attempt,
                    now,
                    result.status,
                )
                await conn.execute(
                    "UPDATE events SET delivered_at = COALESCE(delivered_at, $1),"
                    " acked_at = COALESCE(acked_at, $1), acked_by = COALESCE(acked_by, $2)"
                    " WHERE id = $3",
                    now,
                    f"webhook:{item.target}",
                    item.event_id,
                )
            elif result.outcome == "retry":
                await conn.execute(
                    "UPDATE outbox SET attempts = $3, client_errors = client_errors + $4,"
                    " next_attempt_at = $5, last_status = $6, last_error = $7, locked_until = 0,"
                    f" lock_owner = NULL WHERE {owned}",
                    item.id,
                    owner,
                    attempt,
                    int(result.counts_as_client_error),
                    result.next_attempt_at if result.next_attempt_at is not None else now,
                    result.status,
                    error,
                )
            elif result.outcome == "dead":
                await conn.execute(
                    "UPDATE outbox SET state = 'dead', attempts = $3, dead_at = $4,"
                    " last_status = $5, last_error = $6, locked_until = 0, lock_owner = NULL"
                    f" WHERE {owned}",
                    item.id,
                    owner,
                    attempt,
                    now,
                    result.status,
                    error,
                )
            elif result.outcome == "disabled":
                await conn.execute(
                    "UPDATE outbox SET last_status = $3, last_error = $4, locked_until = 0,"
                    f" lock_owner = NULL WHERE {owned}",
                    item.id,
                    owner,
                    result.status,
                    error,
                )
                await conn.execute(
                    "INSERT INTO webhook_targets (name, disabled_at, disabled_reason)"
                    " VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE SET"
                    " disabled_at = excluded.disabled_at, disabled_reason = excluded.disabled_reason",
                    item.target,
                    now,
                    error or "410 Gone",
                )
            elif result.outcome == "skipped":
                await conn.execute(
                    "UPDATE outbox SET state = 'skipped', last_error = $3, locked_until = 0,"
                    f" lock_owner = NULL WHERE {owned}",
                    item.id,
                    owner,
                    error,
                )
            elif result.outcome == "released":
                await conn.execute(
                    f"UPDATE outbox SET locked_until = 0, lock_owner = NULL WHERE {owned}",
                    item.id,
                    owner,
                )
            else:
                raise ValueError(f"unknown attempt outcome {result.outcome!r}")
            if result.outcome != "released":
                await _bump(conn, metric_bumps(item, result, now))
            if result.outcome == "released":
                # given back unattempted: another node's worker may take it now. (A settled row
                # frees the next row of its thread too, but this node's worker claims that on
                # its next round; a wake-up of every node per delivery costs more than it saves.)
                await conn.execute("SELECT pg_notify($1, '')", pg_channel(OUTBOX))

    async def _finish_delivered(
        self, item: OutboxItem, result: AttemptOutcome, *, owner: str, now: float, attempt: int
    ) -> None:
        """The common outcome: attempts finished at about the same time (a receiver that answers
        at once, several in flight) are recorded together by ``_record_delivered``."""
        await self._delivered.submit(_Delivered(item, result, owner, now, attempt))

    async def _record_delivered(self, done: list[_Delivered]) -> None:
        """Several delivered attempts in one statement (one round trip, one implicit
        transaction): the attempts, the outbox rows (each only while its owner holds it), the
        events' acknowledgements and the summed metric bumps (sorted: one lock order)."""
        sums: dict[tuple[str, str], float] = {}
        for d in done:
            for name, labels, value in metric_bumps(d.item, d.result, d.now):
                sums[(name, labels)] = sums.get((name, labels), 0.0) + value
        bumps = sorted(sums.items())
        await self._execute(
            "WITH x AS (SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[], $4::float8[],"
            "  $5::int[], $6::float8[], $7::text[], $8::text[])"
            "  AS x(id, owner, attempt, at, status, latency, acked_by, event_id)),"
            " a AS (INSERT INTO delivery_attempts (outbox_id, attempt, at, status, latency,"
            "  error, outcome, node) SELECT id, attempt, at, status, latency, NULL, 'delivered',"
            "  owner FROM x),"
            " o AS (UPDATE outbox SET state = 'delivered', attempts = x.attempt,"
            "  delivered_at = x.at, last_status = x.status, last_error = NULL, locked_until = 0,"
            "  lock_owner = NULL FROM x WHERE outbox.id = x.id AND outbox.state = 'pending'"
            "  AND (outbox.lock_owner = x.owner OR outbox.lock_owner IS NULL)),"
            " e AS (UPDATE events SET delivered_at = COALESCE(events.delivered_at, x.at),"
            "  acked_at = COALESCE(events.acked_at, x.at),"
            "  acked_by = COALESCE(events.acked_by, x.acked_by)"
            "  FROM x WHERE events.id = x.event_id)"
            " INSERT INTO delivery_metrics (name, labels, value)"
            " SELECT * FROM unnest($9::text[], $10::text[], $11::float8[])"
            " ON CONFLICT (name, labels) DO UPDATE SET value = delivery_metrics.value + excluded.value",
            [d.item.id for d in done],
            [d.owner for d in done],
            [d.attempt for d in done],
            [d.now for d in done],
            [d.result.status for d in done],
            [d.result.latency for d in done],
            [f"webhook:{d.item.target}" for d in done],
            [d.item.event_id for d in done],
            [k[0] for k, _ in bumps],
            [k[1] for k, _ in bumps],
            [v for _, v in bumps],
            fast=True,
        )

    async def release_leases(self, owner: str) -> int:
        status = await self._execute(
            "UPDATE outbox SET locked_until = 0, lock_owner = NULL WHERE lock_owner = $1"
            " AND state = 'pending'",
            owner,
        )
        return rowcount(status)

    async def lease_owners(self) -> list[str]:
        rows = await self._fetch(
            "SELECT DISTINCT lock_owner FROM outbox WHERE state = 'pending'"
            " AND lock_owner IS NOT NULL AND locked_until > $1",
            time.time(),
        )
        return [r[0] for r in rows]

    async def change_counter(self) -> int:
        """Grows whenever any node queues an event (or frees a delivery): every such commit
        notifies ``OUTBOX``, and this store's listener counts the notifications — no round trip
        (the webhook worker asks before each claim round and while idle)."""
        return self.notifier.fired.get(OUTBOX, 0)

    async def next_due_at(self, targets: list[str]) -> float | None:
        if not targets:
            return None
        row = await self._fetchrow(
            "SELECT MIN(GREATEST(next_attempt_at, locked_until)) AS due FROM outbox"
            " WHERE state = 'pending' AND target = ANY($1::text[])",
            targets,
        )
        return None if row is None or row["due"] is None else float(row["due"])

    # ------------------------------------------------------------------ targets

    async def disable_target(self, target: str, reason: str) -> None:
        await self._execute(
            "INSERT INTO webhook_targets (name, disabled_at, disabled_reason) VALUES ($1, $2, $3)"
            " ON CONFLICT (name) DO UPDATE SET disabled_at = excluded.disabled_at,"
            " disabled_reason = excluded.disabled_reason",
            target,
            time.time(),
            reason,
        )

    async def enable_target(self, target: str) -> bool:
        now = time.time()
        async with self.pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                "UPDATE webhook_targets SET disabled_at = NULL, disabled_reason = NULL"
                " WHERE name = $1 AND disabled_at IS NOT NULL",
                target,
            )
            await conn.execute(
                "UPDATE outbox SET next_attempt_at = LEAST(next_attempt_at, $1)"
                " WHERE target = $2 AND state = 'pending'",
                now,
                target,
            )
            was = rowcount(status) > 0
            if was:
                await conn.execute("SELECT pg_notify($1, '')", pg_channel(OUTBOX))
        return was

    async def disabled_targets(self) -> dict[str, str]:
        rows = await self._fetch(
            "SELECT name, disabled_reason FROM webhook_targets WHERE disabled_at IS NOT NULL"
        )
        return {r["name"]: r["disabled_reason"] or "" for r in rows}

    # ------------------------------------------------------------------ event log

    async def list_events(
        self, tenant: str, *, after_seq: int = 0, limit: int = 50, include_acked: bool = False
    ) -> list[EventRecord]:
        rows = await self._fetch(
            f"SELECT {EVENT_COLS} FROM events e JOIN messages m ON m.id = e.msg_id"
            " WHERE e.tenant = $1 AND e.seq > $2 AND ($3 OR e.acked_at IS NULL)"
            " ORDER BY e.seq LIMIT $4",
            tenant,
            after_seq,
            include_acked,
            limit,
        )
        return [event_record(r, r["envelope"] or "{}") for r in rows]

    async def _event_row(self, tenant: str, ref: str) -> asyncpg.Record:
        row = await self._fetchrow(
            f"SELECT {EVENT_COLS} FROM events e JOIN messages m ON m.id = e.msg_id"
            " WHERE (e.id = $1 OR e.msg_id = $1) AND e.tenant = $2 ORDER BY e.seq LIMIT 1",
            ref,
            tenant,
        )
        if row is None:
            raise NotFound(ref)
        return row

    async def get_event(self, tenant: str, ref: str) -> EventRecord:
        row = await self._event_row(tenant, ref)
        deliveries = await self._fetch(
            "SELECT target, state, attempts, last_status, last_error, delivered_at, dead_at,"
            " next_attempt_at FROM outbox WHERE event_id = $1 ORDER BY id",
            row["id"],
        )
        return event_record(row, row["envelope"] or "{}", [dict(d) for d in deliveries])

    async def ack_event(self, tenant: str, ref: str, *, by: str) -> EventRecord:
        row = await self._event_row(tenant, ref)
        await self._execute(
            "UPDATE events SET acked_at = COALESCE(acked_at, $1), acked_by = COALESCE(acked_by, $2)"
            " WHERE id = $3",
            time.time(),
            by,
            row["id"],
        )
        return await self.get_event(tenant, row["id"])

    async def get_attachment(self, att_id: str) -> AttachmentRecord:
        row = await self._fetchrow(
            "SELECT id, msg_id, sha256, filename, content_type, size FROM attachments WHERE id = $1",
            att_id,
        )
        if row is None:
            raise NotFound(att_id)
        return attachment_record(row)

    # ------------------------------------------------------------------ DLQ

    async def dlq_list(self, *, limit: int = 1000) -> list[DlqEntry]:
        rows = await self._fetch(
            f"SELECT {DLQ_COLS} FROM outbox o JOIN events e ON e.id = o.event_id"
            " WHERE o.state = 'dead' ORDER BY o.dead_at, o.id LIMIT $1",
            limit,
        )
        return [dlq_entry(r) for r in rows]

    async def dlq_get(self, outbox_id: int) -> DlqEntry:
        row = await self._fetchrow(
            f"SELECT {DLQ_COLS} FROM outbox o JOIN events e ON e.id = o.event_id"
            " WHERE o.id = $1 AND o.state = 'dead'",
            outbox_id,
        )
        if row is None:
            raise NotFound(f"dead letter {outbox_id}")
        history = await self._fetch(
            "SELECT attempt, at, status, latency, error, outcome FROM delivery_attempts"
            " WHERE outbox_id = $1 ORDER BY id",
            outbox_id,
        )
        return dlq_entry(row, [dict(h) for h in history])

    async def dlq_retry(self, outbox_ids: list[int] | None) -> int:
        if outbox_ids is not None and not outbox_ids:
            return 0
        async with self.pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                "UPDATE outbox SET state = 'pending', attempts = 0, client_errors = 0,"
                " next_attempt_at = $1, dead_at = NULL, locked_until = 0, lock_owner = NULL"
                " WHERE state = 'dead' AND ($2::bigint[] IS NULL OR id = ANY($2::bigint[]))",
                time.time(),
                outbox_ids,
            )
            n = rowcount(status)
            if n:
                await conn.execute("SELECT pg_notify($1, '')", pg_channel(OUTBOX))
        return n

    async def dlq_purge(self, older_than: float) -> int:
        status = await self._execute(
            "DELETE FROM outbox WHERE state = 'dead' AND dead_at < $1", older_than
        )
        return rowcount(status)

    async def outbox_stats(self, *, exclude_targets: list[str] | None = None) -> OutboxStats:
        now = time.time()
        row = await self._fetchrow(
            "SELECT COUNT(*) FILTER (WHERE state = 'pending') AS pending,"
            " COUNT(*) FILTER (WHERE state = 'pending' AND next_attempt_at <= $1) AS due,"
            " COUNT(*) FILTER (WHERE state = 'dead') AS dead,"
            " MIN(next_attempt_at) FILTER (WHERE state = 'pending' AND next_attempt_at <= $1)"
            "  AS oldest_due,"
            " MIN(created_at) FILTER (WHERE state = 'pending') AS oldest_pending"
            " FROM outbox WHERE state IN ('pending', 'dead') AND NOT (target = ANY($2::text[]))",
            now,
            list(exclude_targets or []),
        )
        return outbox_stats(row, now)

    # ------------------------------------------------------------------ metrics

    async def delivery_metrics(self) -> list[tuple[str, dict[str, str], float]]:
        rows = await self._fetch("SELECT name, labels, value FROM delivery_metrics")
        return [(r["name"], json.loads(r["labels"]), float(r["value"])) for r in rows]

    async def set_delivery_metric(self, name: str, labels: dict[str, str], value: float) -> None:
        await self._execute(
            "INSERT INTO delivery_metrics (name, labels, value) VALUES ($1, $2, $3)"
            " ON CONFLICT (name, labels) DO UPDATE SET value = excluded.value",
            name,
            encode_labels(**labels),
            value,
        )

    async def publish_process_metrics(self, key: str, exposition: str) -> None:
        await self._execute(
            "INSERT INTO process_metrics (key, updated_at, exposition) VALUES ($1, $2, $3)"
            " ON CONFLICT (key) DO UPDATE SET updated_at = excluded.updated_at,"
            " exposition = excluded.exposition",
            key,
            time.time(),
            exposition,
        )

    async def process_metrics(self) -> list[tuple[str, float, str]]:
        rows = await self._fetch("SELECT key, updated_at, exposition FROM process_metrics")
        return [(r["key"], float(r["updated_at"]), r["exposition"]) for r in rows]

    async def drop_process_metrics(self, key: str) -> None:
        await self._execute("DELETE FROM process_metrics WHERE key = $1", key)
