"""Prometheus metrics of delivery and the event log, on the shared ``metrics.REGISTRY``.

The counters and histograms move as attempts finish; the gauges (DLQ depth, outbox lag,
pending rows) are refreshed from the store by ``refresh_gauges`` when ``/metrics`` is scraped,
so they are right even when another process (the ``dlq`` CLI) changed the rows.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from mailgate.metrics import REGISTRY
from mailgate.store.delivery import DeliveryStore

DELIVERIES = Counter(
    "mailgate_webhook_deliveries",
    "Webhook attempts by target and outcome (delivered, retry, dead, disabled, skipped)",
    ["target", "outcome"],
    registry=REGISTRY,
)
ATTEMPT_SECONDS = Histogram(
    "mailgate_webhook_attempt_seconds",
    "Duration of one webhook attempt (request sent to response read)",
    ["target"],
    registry=REGISTRY,
)
ACCEPT_TO_DELIVERED = Histogram(
    "mailgate_accept_to_delivered_seconds",
    "From the SMTP 250 to the first 2xx from a webhook target",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400),
    registry=REGISTRY,
)
BREAKER_OPEN = Gauge(
    "mailgate_webhook_breaker_open",
    "1 while the circuit breaker of a target is open",
    ["target"],
    registry=REGISTRY,
)
TARGET_DISABLED = Gauge(
    "mailgate_webhook_target_disabled",
    "1 while a target is disabled (410 Gone, or by an operator)",
    ["target"],
    registry=REGISTRY,
)
DLQ_DEPTH = Gauge(
    "mailgate_dlq_depth", "Webhook deliveries in the dead-letter queue", registry=REGISTRY
)
OUTBOX_PENDING = Gauge(
    "mailgate_outbox_pending", "Webhook deliveries not yet settled", registry=REGISTRY
)
OUTBOX_LAG = Gauge(
    "mailgate_outbox_lag_seconds",
    "Age of the oldest webhook delivery not yet settled (0 when none)",
    registry=REGISTRY,
)
API_REQUESTS = Counter(
    "mailgate_api_requests",
    "Polling API requests by route and status",
    ["route", "status"],
    registry=REGISTRY,
)

_seen_disabled: set[str] = set()


async def refresh_gauges(store: DeliveryStore) -> None:
    """Read DLQ depth, pending rows and lag from the store into the gauges."""
    stats = await store.outbox_stats()
    DLQ_DEPTH.set(stats.dead)
    OUTBOX_PENDING.set(stats.pending)
    OUTBOX_LAG.set(stats.oldest_pending_age)
    disabled = await store.disabled_targets()
    for target in _seen_disabled - set(disabled):
        TARGET_DISABLED.labels(target=target).set(0)  # re-enabled since the last scrape
    for target in disabled:
        TARGET_DISABLED.labels(target=target).set(1)
    _seen_disabled.update(disabled)
