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
from tests.support.abuse import send_one

SLOTS = 20


async def flood_then_send(tmp_path: Path, stress_idle: float) -> tuple[bool, list[bytes]]:
    """Fill every slot with silent holders, then try to send for up to 4 s (bounded)."""
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
    holders: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(SLOTS):
            reader, writer = await asyncio.open_connection(host, port)
            await asyncio.wait_for(reader.readline(), 5)  # the banner; then say nothing
            holders.append((reader, writer))
        assert server.connections.total == SLOTS
        accepted = False
        deadline = time.monotonic() + 4.0
        while not accepted and time.monotonic() < deadline:
            accepted, _took, _why = await asyncio.to_thread(send_one, host, port, "127.0.0.1", 5.0)
            if not accepted:
                await asyncio.sleep(0.2)
        said: list[bytes] = []
        for reader, _writer in holders:
            try:
                said.append(await asyncio.wait_for(reader.read(200), 0.2))
            except TimeoutError:
                said.append(b"")
        return accepted, said
    finally:
        for _reader, writer in holders:
            writer.close()
        await server.stop(grace=0.5)
        await store.close()


async def test_idle_holders_are_cut_under_stress_and_a_new_sender_gets_through(
    tmp_path: Path,
) -> None:
    accepted, said = await flood_then_send(tmp_path, stress_idle=0.5)
    assert accepted
    cut = [s for s in said if s.startswith(b"421 4.4.2") and b"busy" in s]
    assert len(cut) >= SLOTS // 2, said


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
