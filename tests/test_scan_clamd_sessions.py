"""clamd scans over kept ``zIDSESSION`` connections (``ClamdClient(sessions=N)``, what the
antivirus stage and the DATA gate use), against a real clamd: the verdicts are those of a
connection per scan, sessions are reused, concurrent scans never get each other's answer, a
clamd restart costs one resend (never a verdict), a dead clamd is an error (never clean)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from mailgate.config import AntivirusConfig
from mailgate.scanners.base import ScanError
from mailgate.scanners.clamd import SESSIONS, ClamdClient
from tests.support.clamd import Clamd

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "scan"
EICAR_SIG = "Mailgate.Test.EICAR.UNOFFICIAL"
EICAR = (FIXTURES / "eicar-attachment.eml").read_bytes()
HAM = (FIXTURES / "ham.eml").read_bytes()


def pooled(address: str, timeout: float = 5.0) -> ClamdClient:
    cfg = AntivirusConfig(engine="clamav", address=address, timeout=timeout)
    return ClamdClient(cfg, sessions=SESSIONS)


async def test_sessions_give_the_same_verdicts_and_are_reused(clamd_running: Clamd) -> None:
    c = pooled(clamd_running.address)
    try:
        first = await c.scan(HAM)
        (session,) = c._idle
        for _ in range(5):
            assert (await c.scan(HAM)).clean
            assert (await c.scan(EICAR)).signature == EICAR_SIG
        assert first.clean and c._idle == [session]  # one connection for all eleven scans
        assert session.n == 12  # clamd numbered its eleven replies 1..11
    finally:
        await c.close()
    assert c._idle == []


async def test_concurrent_scans_never_get_each_others_answer(clamd_running: Clamd) -> None:
    c = pooled(clamd_running.address)
    try:
        jobs = [EICAR if i % 3 == 0 else HAM for i in range(30)]
        verdicts = await asyncio.gather(*(c.scan(j) for j in jobs))
        for job, verdict in zip(jobs, verdicts, strict=True):
            assert verdict.signature == (EICAR_SIG if job is EICAR else None)
        assert 1 <= len(c._idle) <= SESSIONS
    finally:
        await c.close()


async def test_a_clamd_restart_costs_one_resend_and_a_dead_clamd_is_an_error(
    tmp_path: Path,
) -> None:
    own = Clamd(tmp_path / "clamd").start()
    c = pooled(own.address)
    try:
        assert (await c.scan(EICAR)).signature == EICAR_SIG
        assert len(c._idle) == 1
        own.stop()
        own.start()  # same port: the kept session is dead, clamd is back
        assert (await c.scan(EICAR)).signature == EICAR_SIG
        own.stop()
        with pytest.raises(ScanError) as err:  # with an idle session left from before
            await c.scan(HAM)
        assert err.value.kind == "unavailable"
    finally:
        await c.close()
        own.stop()


async def test_errors_do_not_leave_a_session_behind(clamd_running: Clamd) -> None:
    c = pooled(clamd_running.address)
    try:
        with pytest.raises(ScanError) as err:
            await c.scan(b"A" * (3 * 1024 * 1024))  # over the fixture's StreamMaxLength
        assert err.value.kind == "too-large"
        assert c._idle == []  # an ERROR answer may leave the session in any state
        assert (await c.scan(HAM)).clean
    finally:
        await c.close()


async def test_an_answer_with_another_number_is_a_protocol_error() -> None:
    async def liar(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"zIDSESSION\0")
        await r.readuntil(b"zINSTREAM\0")
        w.write(b"7: stream: OK\0")  # not the number of our command (1)
        await w.drain()
        await asyncio.sleep(1)
        w.close()

    async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await asyncio.sleep(3)
        w.close()

    cases: list[tuple[Any, str, float]] = [(liar, "protocol", 3.0), (silent, "timeout", 0.3)]
    for handler, kind, timeout in cases:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        c = pooled(f"127.0.0.1:{port}", timeout)
        try:
            with pytest.raises(ScanError) as err:
                await c.scan(b"x" * 10)
            assert err.value.kind == kind
            assert c._idle == []  # neither a lying nor a cut-off session is kept
        finally:
            await c.close()
            server.close()
