"""Prometheus metrics of delivery and the event log, on the shared ``metrics.REGISTRY``.

Webhook delivery runs in a worker process, while ``/metrics`` is served by the front process.
So the delivery figures are not in-process counters. The store keeps them: counters and
histogram buckets are written in the transaction that records each attempt, and the
breaker gauge is written when the breaker opens or closes. On each scrape, ``refresh`` reads
them, together with the DLQ depth, pending rows, lag, disabled targets and the reply
outbox depth, into a snapshot
that ``DeliveryCollector`` exposes. As a side effect, the counters survive restarts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from prometheus_client import Counter
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from mailgate.metrics import REGISTRY
from mailgate.store.delivery import (
    ACCEPT_TO_DELIVERED_BUCKETS,
    ATTEMPT_BUCKETS,
    DeliveryStore,
    OutboxStats,
)

API_REQUESTS = Counter(
    "mailgate_api_requests",
    "Polling API requests by route and status",
    ["route", "status"],
    registry=REGISTRY,
)

Stored = list[tuple[str, dict[str, str], float]]


@runtime_checkable
class ReplyStats(Protocol):
    async def reply_stats(self) -> dict[str, int]:
        """Rows of the reply outbox by state (pending, sent, dead, suppressed)."""


class DeliveryCollector(Collector):
    """Exposes the last snapshot read from the store (see the module docstring)."""

    def __init__(self) -> None:
        self.stored: Stored = []
        self.stats = OutboxStats(0, 0, 0, 0.0, 0.0)
        self.disabled: dict[str, str] = {}
        self.known_targets: set[str] = set()
        self.replies: dict[str, int] = {}

    def collect(self) -> Iterator[Metric]:
        by_name: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        for name, labels, value in self.stored:
            by_name[name].append((labels, value))

        deliveries = CounterMetricFamily(
            "mailgate_webhook_deliveries",
            "Webhook attempts by target and outcome (delivered, retry, dead, disabled, skipped)",
            labels=["target", "outcome"],
        )
        for labels, value in by_name["webhook_deliveries"]:
            deliveries.add_metric([labels.get("target", ""), labels.get("outcome", "")], value)
        yield deliveries

        yield from self._histograms(
            by_name,
            "webhook_attempt_seconds",
            "mailgate_webhook_attempt_seconds",
            "Duration of one webhook attempt (request sent to response read)",
            ATTEMPT_BUCKETS,
            ["target"],
        )
        yield from self._histograms(
            by_name,
            "accept_to_delivered_seconds",
            "mailgate_accept_to_delivered_seconds",
            "From the SMTP 250 to the first 2xx from a webhook target",
            ACCEPT_TO_DELIVERED_BUCKETS,
            [],
        )

        breaker = GaugeMetricFamily(
            "mailgate_webhook_breaker_open",
            "1 while the circuit breaker of a target is open",
            labels=["target"],
        )
        for labels, value in by_name["webhook_breaker_open"]:
            breaker.add_metric([labels.get("target", "")], value)
        yield breaker

        disabled = GaugeMetricFamily(
            "mailgate_webhook_target_disabled",
            "1 while a target is disabled (410 Gone, or by an operator)",
            labels=["target"],
        )
        for target in sorted(self.known_targets | set(self.disabled)):
            disabled.add_metric([target], 1.0 if target in self.disabled else 0.0)
        yield disabled

        yield GaugeMetricFamily(
            "mailgate_dlq_depth", "Webhook deliveries in the dead-letter queue", self.stats.dead
        )
        yield GaugeMetricFamily(
            "mailgate_outbox_pending", "Webhook deliveries not yet settled", self.stats.pending
        )
        yield GaugeMetricFamily(
            "mailgate_outbox_lag_seconds",
            "Age of the oldest webhook delivery not yet settled (0 when none)",
            self.stats.oldest_pending_age,
        )
        yield GaugeMetricFamily(
            "mailgate_reply_outbox_pending",
            "Auto-replies waiting to be sent to the smarthost (the SMTP reply outbox)",
            self.replies.get("pending", 0),
        )
        yield GaugeMetricFamily(
            "mailgate_reply_outbox_dead",
            "Auto-replies that gave up (mailgate outbox list --state dead)",
            self.replies.get("dead", 0),
        )

    @staticmethod
    def _histograms(
        by_name: dict[str, list[tuple[dict[str, str], float]]],
        stored: str,
        name: str,
        doc: str,
        bounds: tuple[float, ...],
        label_names: list[str],
    ) -> Iterator[Metric]:
        family = HistogramMetricFamily(name, doc, labels=label_names)
        series: dict[tuple[str, ...], dict[str, float]] = defaultdict(dict)
        sums: dict[tuple[str, ...], float] = {}
        for labels, value in by_name[f"{stored}_bucket"]:
            key = tuple(labels.get(n, "") for n in label_names)
            series[key][labels.get("le", "+Inf")] = value
        for labels, value in by_name[f"{stored}_sum"]:
            sums[tuple(labels.get(n, "") for n in label_names)] = value
        for key, per_le in sorted(series.items()):
            running = 0.0
            buckets: list[tuple[str, float]] = []
            for bound in bounds:
                running += per_le.get(repr(bound), 0.0)
                buckets.append((str(bound), running))
            running += per_le.get("+Inf", 0.0)
            buckets.append(("+Inf", running))
            family.add_metric(list(key), buckets, sums.get(key, 0.0))
        yield family


COLLECTOR = DeliveryCollector()
REGISTRY.register(COLLECTOR)


async def refresh(store: DeliveryStore, targets: list[str] | None = None) -> None:
    """Read the stored delivery figures into the collector (before a scrape)."""
    COLLECTOR.stored = await store.delivery_metrics()
    COLLECTOR.stats = await store.outbox_stats()
    COLLECTOR.disabled = await store.disabled_targets()
    if targets:
        COLLECTOR.known_targets.update(targets)
    if isinstance(store, ReplyStats):
        COLLECTOR.replies = await store.reply_stats()
