"""Two nodes on one host share one PostgreSQL database: their lease owners and metrics keys
carry the configured ``[store] node``, not the host name (issue 13).

With host-name owners, node B starting up took node A's dead-looking owner for one of its own
crashed processes (same host, and a pid that does not run in B's view is proof of nothing for
A's) and released A's leases; and each node's ``/metrics`` summed the other's worker snapshots.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
from prometheus_client import CollectorRegistry, Counter

from mailgate.api.urls import AttachmentUrlSigner
from mailgate.app import build_store
from mailgate.config import ApiConfig, StoreConfig, load_config
from mailgate.delivery.process_metrics import MetricsPublisher, merged_exposition
from mailgate.delivery.smtp_out import ReplySender
from mailgate.delivery.webhook import WebhookWorker
from mailgate.store.delivery import event_id_for
from mailgate.store.ports import Store
from tests.support.delivery import fast_delivery, hook, publish
from tests.support.http_receiver import HttpReceiver


@asynccontextmanager
async def pg_node(tmp_path: Path, dsn: str, node: str) -> AsyncIterator[Store]:
    cfg = load_config(None, env={"MAILGATE_DATA_DIR": str(tmp_path / node)})
    store_cfg = StoreConfig(
        data_dir=str(tmp_path / node),
        backend="postgresql",  # type: ignore[arg-type]
        dsn=dsn,
        node=node,
    )
    store = build_store(dataclasses.replace(cfg, store=store_cfg))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def dead_pid() -> int:
    out = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(out.stdout)


def worker(store: Store, url: str, tmp_path: Path) -> WebhookWorker:
    urls = AttachmentUrlSigner(ApiConfig(public_url="http://127.0.0.1:1"), tmp_path)
    return WebhookWorker(store, [hook(url)], fast_delivery(), urls)


async def test_lease_owners_name_the_configured_node_and_spare_the_other_nodes(
    tmp_path: Path, pg_dsn: str
) -> None:
    async with (
        HttpReceiver() as rx,
        pg_node(tmp_path, pg_dsn, "mxa") as a,
        pg_node(tmp_path, pg_dsn, "mxb") as b,
    ):
        msg_id = await publish(a)  # type: ignore[arg-type]
        # node A's worker claimed the row and died (its pid no longer runs on this host)
        a_dead = f"mxa:{dead_pid()}:deadbeef"
        assert len(await a.claim_outbox("hook", 1, owner=a_dead, lease=300)) == 1

        wb = worker(b, rx.url(), tmp_path)
        assert wb.owner.startswith("mxb:")
        reply_b = ReplySender(b, load_config(None).reply)
        assert reply_b.owner.startswith("mxb:")
        await wb.start()
        try:
            # B must not judge A's processes: A's lease stays until A or its expiry frees it
            assert await b.lease_owners() == [a_dead]
        finally:
            await wb.stop()
        assert rx.requests == []

        wa = worker(a, rx.url(), tmp_path)
        assert wa.owner.startswith("mxa:")
        await wa.start()  # A restarted: it releases its dead predecessor's lease at once
        try:
            (req,) = await rx.wait_for(1, timeout=10)
        finally:
            await wa.stop()
        assert req.header("webhook-id") == event_id_for(msg_id)
        conn = await asyncpg.connect(pg_dsn)
        try:
            nodes = await conn.fetch("SELECT node FROM delivery_attempts")
        finally:
            await conn.close()
        assert [r["node"] for r in nodes] == [wa.owner]


async def test_metrics_snapshots_are_summed_per_node_on_one_host(
    tmp_path: Path, pg_dsn: str
) -> None:
    async with pg_node(tmp_path, pg_dsn, "mxa") as a, pg_node(tmp_path, pg_dsn, "mxb") as b:
        for store, n in ((a, 2), (b, 5)):
            reg = CollectorRegistry()
            Counter("x_done", "done", registry=reg).inc(n)
            # a worker of each node: its key names its node (pid 1 runs in any container)
            pub = MetricsPublisher(store, reg, interval=3600)
            pub.key = pub.key.rsplit(":", 1)[0] + ":1"
            assert pub.key == f"{store.node}:1"  # type: ignore[attr-defined]
            await pub.publish()
        front = CollectorRegistry()
        text_a = (await merged_exposition(a, front)).decode()
        text_b = (await merged_exposition(b, front)).decode()
    assert "x_done_total 2.0" in text_a
    assert "x_done_total 5.0" in text_b  # each node its own worker's figure, not the sum
