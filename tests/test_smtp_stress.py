"""Stress mode against a connect-and-hold flood (issue 12; Postfix ``${stress?10s}``): when most
connection slots are held by clients that say nothing, the idle ones are cut after
``stress_idle_timeout`` and a first-time sender gets a slot; with stress mode off it does not."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from mailgate.config import DomainConfig, SmtpConfig
from mailgate.smtp.connections import ConnectionCounter, ConnectionLimits
from mailgate.smtp.handler import SmtpHandler
from mailgate.smtp.policy import RecipientPolicy
from mailgate.smtp.server import SmtpServer
from mailgate.store.sqlite import SqliteStore
from tests.support.abuse import AttackStats, flood, send_one

SLOTS = 20


HOLDER_IPS = [f"127.3.0.{n}" for n in range(1, 5)]


async def flood_then_send(tmp_path: Path, stress_idle: float) -> tuple[bool, list[bytes]]:
    """Fill every slot with silent holders that come back the moment they are cut (as a real
    flood does), then try to send from another address for up to 5 s (bounded)."""
    cfg = SmtpConfig(
        listen="127.0.0.1:0",
        hostname="mx.test",
        greet_delay=0.0,
        max_connections=SLOTS,
        max_connections_per_ip=SLOTS,
        max_connections_per_network=SLOTS,
        reserved_connections=0,
        stress_idle_timeout=stress_idle,
    )
    store = SqliteStore(tmp_path / "data")
    await store.open()
    domains = [DomainConfig(name="example.test", mailboxes=["support"])]
    server = SmtpServer(cfg, SmtpHandler(cfg, policy=RecipientPolicy(domains), spool=store))
    host, port = await server.start()
    stop = asyncio.Event()
    stats = AttackStats()
    holders = asyncio.create_task(
        flood(host, port, HOLDER_IPS, SLOTS // len(HOLDER_IPS), True, stop, stats)
    )
    try:
        for _ in range(100):  # bounded: until the holders have every slot
            if server.connections.total >= SLOTS:
                break
            await asyncio.sleep(0.05)
        assert server.connections.total == SLOTS
        accepted = False
        deadline = time.monotonic() + 5.0
        while not accepted and time.monotonic() < deadline:
            accepted, _took, _why = await asyncio.to_thread(send_one, host, port, "127.0.0.1", 5.0)
            if not accepted:
                await asyncio.sleep(0.2)
        return accepted, [reply for reply, _held in stats.cuts]
    finally:
        stop.set()
        await asyncio.wait_for(holders, 30)
        await server.stop(grace=0.5)
        await store.close()


async def test_idle_holders_are_cut_under_stress_and_a_new_sender_gets_through(
    tmp_path: Path,
) -> None:
    accepted, said = await flood_then_send(tmp_path, stress_idle=0.5)
    assert accepted
    assert any(s.startswith(b"421 4.4.2") and b"busy" in s for s in said), said


async def test_without_stress_mode_the_flood_locks_new_senders_out(tmp_path: Path) -> None:
    accepted, said = await flood_then_send(tmp_path, stress_idle=0.0)
    assert not accepted
    assert not any(s.startswith(b"421 4.4.2") for s in said)


class Idle:
    def __init__(self, idle: float) -> None:
        self.idle = idle
        self.cut = False

    def idle_for(self, now: float) -> float:
        return self.idle

    def cut_idle(self) -> None:
        self.cut = True


def test_the_sweep_waits_for_stress_and_spares_busy_sessions() -> None:
    limits = ConnectionLimits(max_total=10, stress_idle=5.0)
    counter = ConnectionCounter()
    quiet, busy = Idle(60.0), Idle(1.0)
    counter.live = {quiet, busy}
    counter.total = 7  # below 4/5 of 10: no stress
    assert counter.relieve(limits, now=100.0) == 0 and not quiet.cut
    counter.total = 8
    assert counter.relieve(limits, now=100.0) == 1
    assert quiet.cut and not busy.cut
    quiet.cut = False
    assert counter.relieve(limits, now=100.5) == 0  # at most one sweep a second
    assert counter.relieve(limits, now=101.0) == 1
    assert counter.relieve(ConnectionLimits(max_total=10), now=200.0) == 0  # off


def test_a_client_cut_under_stress_gets_no_new_slot_while_the_stress_lasts() -> None:
    limits = ConnectionLimits(max_total=10, stress_idle=5.0)
    counter = ConnectionCounter()
    for n in range(8):
        assert counter.try_open(f"10.0.{n}.1", limits) is None
    counter.penalize("10.0.0.1", limits, now=time.monotonic())
    assert counter.try_open("10.0.0.1", limits) == "stress"
    assert counter.try_open("10.0.0.1", limits, clean=True) is None  # a known sender is spared
    assert counter.try_open("10.0.9.1", limits) is None  # others are not affected
    counter.close("10.0.9.1")
    counter.close("10.0.0.1")
    counter.close("10.0.7.1")
    assert not counter.under_stress(limits)
    assert counter.try_open("10.0.0.1", limits) is None  # no stress, no penalty
    counter.penalized["10.0.5.1"] = time.monotonic() - 1
    assert not counter.is_penalized("10.0.5.1") and "10.0.5.1" not in counter.penalized
