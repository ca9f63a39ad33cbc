"""Slowloris against a real listener on 127.0.0.1: a legitimate sender keeps getting through.

324 trickling connections (one byte every 2 s once in DATA) from 36 addresses in 12 networks
(127.1.0.0/24 … 127.12.0.0/24; the legitimate sender is 127.0.0.1, another /24) run for about
ten seconds while the legitimate sender delivers one message per connection. Without the
connection economics of issue 12 the attackers hold every slot and the sender gets 421 4.7.0 for
every message. The config is the production shape with short deadlines so the run is bounded:
DATA deadline 8 s, minimum rate 200 B/s after 3 s, session deadline 15 s.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from mailgate.config import DomainConfig, SmtpConfig
from mailgate.smtp.handler import SmtpHandler
from mailgate.smtp.policy import RecipientPolicy
from mailgate.smtp.server import SmtpServer
from mailgate.store.sqlite import SqliteStore
from tests.support.abuse import (
    AttackStats,
    AttackThread,
    attacker_sources,
    loopback_aliases_work,
    raise_fd_limit,
    send_messages,
    send_one,
    slowloris,
)

NETWORKS, PER_NETWORK, PER_SOURCE = 12, 3, 9  # 324 attack connections
DATA_TIMEOUT, GRACE = 8.0, 3.0
LEGIT_MESSAGES = 40

pytestmark = pytest.mark.skipif(
    not loopback_aliases_work(), reason="needs 127.0.0.0/8 on loopback (Linux)"
)


async def test_legitimate_sender_gets_through_a_slowloris(tmp_path: Path) -> None:
    raise_fd_limit(4096)
    cfg = SmtpConfig(
        listen="127.0.0.1:0",
        hostname="mx.test",
        greet_delay=0.0,
        max_connections=300,
        max_connections_per_ip=20,
        max_connections_per_network=40,
        max_data_per_network=30,
        reserved_connections=30,
        data_timeout=DATA_TIMEOUT,
        min_data_rate=200,
        min_data_rate_grace=GRACE,
        session_timeout=15.0,
    )
    store = SqliteStore(tmp_path / "data")
    await store.open()
    domains = [DomainConfig(name="example.test", mailboxes=["support"])]
    server = SmtpServer(cfg, SmtpHandler(cfg, policy=RecipientPolicy(domains), spool=store))
    host, port = await server.start()
    attack = AttackThread()
    stats = AttackStats()
    peak_sessions = 0

    async def watch() -> None:
        nonlocal peak_sessions
        while True:
            peak_sessions = max(peak_sessions, server.connections.total)
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    try:
        # The sender has written before: one delivery gives it a clean history.
        warm = await asyncio.to_thread(send_one, host, port, "127.0.0.1")
        assert warm[0], warm
        sources = attacker_sources(NETWORKS, PER_NETWORK)
        attack.start(lambda stop: slowloris(host, port, sources, PER_SOURCE, 2.0, stop, stats))
        deadline = time.monotonic() + 15
        while stats.peak_in_data < 250 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        result = await asyncio.to_thread(
            send_messages, host, port, LEGIT_MESSAGES, ["127.0.0.1"], 0.15
        )
        # Let the attack run past one more cut so that every cut is observed.
        await asyncio.sleep(1.0)
    finally:
        attack.stop()
        watcher.cancel()
        await server.stop(grace=0.5)
        await store.close()

    attempts = NETWORKS * PER_NETWORK * PER_SOURCE
    assert attempts >= 300
    # The attack was real: hundreds of sessions at once, most of them in DATA.
    assert stats.peak_in_data >= 250, stats
    assert peak_sessions >= 250, peak_sessions
    # The legitimate sender kept >= 95 % of its messages accepted.
    assert result.ratio >= 0.95, (result.ratio, result.failures[:5])
    # Attack connections are cut within the deadline, with a 421 4.4.2 that says why.
    assert len(stats.cuts) >= 250, len(stats.cuts)
    for reply, after in stats.cuts:
        assert reply.startswith(b"421 4.4.2 "), reply
        assert after <= DATA_TIMEOUT + 1.5, after
    slow = [after for reply, after in stats.cuts if b"too slow" in reply]
    assert slow and min(slow) >= GRACE - 0.1
