"""Worker processes' metrics reach the front's /metrics through the store, summed."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from mailgate.delivery.process_metrics import MetricsPublisher, merged_exposition, process_key
from tests.support.delivery import open_store


def registry(parsed: int, seconds: list[float], active: int) -> CollectorRegistry:
    r = CollectorRegistry()
    c = Counter("x_processed", "processed", ["outcome"], registry=r)
    c.labels("ok").inc(parsed)
    h = Histogram("x_parse_seconds", "parse time", buckets=(0.1, 1.0), registry=r)
    for s in seconds:
        h.observe(s)
    Gauge("x_active", "active", registry=r).set(active)
    return r


def dead_pid() -> int:
    out = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(out.stdout)


async def test_snapshots_are_summed_and_stale_ones_dropped(tmp_path: Path) -> None:
    front = registry(0, [], 3)
    async with open_store(tmp_path) as store:
        live = f"{socket.gethostname()}:1"  # pid 1 runs in any container
        await store.publish_process_metrics(
            live, generate_latest(registry(2, [0.05, 0.5], 1)).decode()
        )
        gone = process_key(dead_pid())
        await store.publish_process_metrics(gone, generate_latest(registry(100, [], 0)).decode())
        # a worker running in this very process (workers = 0) is already in ``front``
        await store.publish_process_metrics(
            process_key(), generate_latest(registry(1000, [], 0)).decode()
        )
        text = (await merged_exposition(store, front)).decode()
        keys = [k for k, _, _ in await store.process_metrics()]
    assert 'x_processed_total{outcome="ok"} 2.0' in text
    assert 'x_parse_seconds_bucket{le="0.1"} 1.0' in text
    assert 'x_parse_seconds_bucket{le="+Inf"} 2.0' in text
    assert "x_parse_seconds_count 2.0" in text
    assert "x_active 4.0" in text
    assert "_created" not in text
    assert gone not in keys and live in keys


async def test_publisher_writes_and_stops_with_a_last_snapshot(tmp_path: Path) -> None:
    reg = registry(1, [], 0)
    async with open_store(tmp_path) as store:
        pub = MetricsPublisher(store, reg, interval=3600)
        await pub.start()
        deadline = time.monotonic() + 5
        while not await store.process_metrics() and time.monotonic() < deadline:
            await _yield()
        Counter("x_late", "late", registry=reg).inc()
        await pub.stop()
        ((key, _, text),) = await store.process_metrics()
    assert key == process_key()
    assert "x_late_total 1.0" in text


async def _yield() -> None:
    import asyncio

    await asyncio.sleep(0.01)
