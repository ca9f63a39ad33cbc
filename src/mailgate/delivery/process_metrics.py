"""Metrics across processes: worker processes publish their registry, ``/metrics`` sums them.

``mailgate serve`` runs the SMTP listener and the API in the front process, and ingest,
parsing, auth, the pipeline and delivery in worker processes. Each process has its own
Prometheus registry, but only the front serves ``/metrics``. So each worker runs a
``MetricsPublisher``, which writes its registry's exposition text to the store every few
seconds (one row per node and pid) and once more when it stops. ``merged_exposition`` then
parses the front's own registry and every live worker's snapshot, and sums the samples.
Counters and histograms add up across processes. Gauges add up too, which is right for
per-process figures (active sessions) but makes a gauge that each process sets to a global
value count it once per process. Snapshots of processes that exited on this host are
dropped; the counters they held start again, and Prometheus treats that as a counter reset.

The store carries the snapshots, so no shared directory or port is needed. With several nodes
on one PostgreSQL database each node's ``/metrics`` sums the processes of its own node only
(``[store] node``, also when two run on one host), so scraping every node counts every process
once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

from mailgate.logs import RateLimitedLog, describe_error, log_fields
from mailgate.store.base import StoreError
from mailgate.store.ports import node_name, pid_alive

log = logging.getLogger("mailgate.delivery")

PUBLISH_INTERVAL = 2.0
MAX_AGE = 60.0  # a snapshot older than this is from a process that is gone (another host)


class MetricsStore(Protocol):
    async def publish_process_metrics(self, key: str, exposition: str) -> None:
        """Store (replace) the exposition text of process ``key`` (``host:pid``)."""

    async def process_metrics(self) -> list[tuple[str, float, str]]:
        """(key, updated_at, exposition) of every process that published."""

    async def drop_process_metrics(self, key: str) -> None: ...


def process_key(pid: int | None = None, node: str | None = None) -> str:
    """``node:pid``: the node's configured name (``[store] node``; the host name by default),
    so two nodes on one host keep apart whose processes are whose."""
    return f"{node or socket.gethostname()}:{os.getpid() if pid is None else pid}"


class MetricsPublisher:
    """Publishes this process's registry to the store every ``interval`` seconds."""

    def __init__(
        self,
        store: MetricsStore,
        registry: CollectorRegistry,
        *,
        interval: float = PUBLISH_INTERVAL,
        node: str | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.interval = interval
        self.key = process_key(node=node_name(store, node))
        self._task: asyncio.Task[None] | None = None
        # a store that keeps failing (disk full) gets one line every few minutes, not one per try
        self._limited = RateLimitedLog(log, interval=300.0)

    async def publish(self) -> None:
        text = generate_latest(self.registry).decode("utf-8")
        await self.store.publish_process_metrics(self.key, text)

    async def _run(self) -> None:
        while True:
            try:
                await self.publish()
            except StoreError as exc:
                self._limited.log(
                    logging.WARNING, "publish", "could not publish this process's metrics", exc=exc
                )
            else:
                self._limited.reset("publish")
            await asyncio.sleep(self.interval)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="mailgate-metrics-publisher")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        with contextlib.suppress(StoreError, TimeoutError):
            await asyncio.wait_for(self.publish(), 2.0)  # the last counts before exit


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def _merge(texts: list[str]) -> list[Metric]:
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        try:
            parsed = list(text_string_to_metric_families(text))
        except ValueError as exc:
            log.warning(
                "skipping an unreadable metrics snapshot",
                extra=log_fields(error=describe_error(exc)),
            )
            continue
        for fam in parsed:
            if fam.name.endswith("_created"):
                continue  # creation timestamps do not add up; they are optional anyway
            if fam.name not in families:
                families[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
                values[fam.name] = {}
            acc = values[fam.name]
            for s in fam.samples:
                if s.name.endswith("_created"):
                    continue
                key = (s.name, tuple(sorted(s.labels.items())))
                acc[key] = acc.get(key, 0.0) + s.value
    out = []
    for name, fam in families.items():
        for (sample_name, labels), value in values[name].items():
            fam.add_sample(sample_name, dict(labels), value)
        out.append(fam)
    return out


async def merged_exposition(
    store: MetricsStore, registry: CollectorRegistry, *, node: str | None = None
) -> bytes:
    """This process's registry plus every live worker's snapshot of this node, summed
    (Prometheus text)."""
    texts = [generate_latest(registry).decode("utf-8")]
    host = node_name(store, node)
    me = process_key(node=host)
    now = time.time()
    try:
        rows = await store.process_metrics()
    except StoreError:
        rows = []
    for key, updated_at, text in rows:
        if key == me:
            continue  # workers = 0: the worker runs here; its figures are already in ``registry``
        owner_host, _, pid = key.rpartition(":")
        gone = (
            owner_host == host and pid.isdigit() and not pid_alive(int(pid))
        ) or now - updated_at > MAX_AGE
        if gone:
            with contextlib.suppress(StoreError):
                await store.drop_process_metrics(key)
            continue
        if owner_host != host:
            continue  # another node's worker (also on this host): that node's /metrics counts it
        texts.append(text)
    merged = CollectorRegistry(auto_describe=False)
    merged.register(_Families(_merge(texts)))
    return generate_latest(merged)
