"""The clamd client and the antivirus stage against a real clamd (test-only signatures)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from mailgate.config import AntivirusConfig, Config, PipelineConfig
from mailgate.pipeline.base import Context
from mailgate.pipeline.lifecycle import Services, StageDeferred, build_stage
from mailgate.pipeline.rules import load_rules
from mailgate.pipeline.runner import EmptyPorts
from mailgate.pipeline.stages.antivirus import STAGE as DEFAULT_STAGE
from mailgate.scanners.base import ScanError
from mailgate.scanners.clamd import ClamdClient, parse_reply
from tests.support.clamd import Clamd
from tests.support.daemon import free_port

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "scan"
TESTFILES = Path("/usr/share/clamav-testfiles")
EICAR_SIG = "Mailgate.Test.EICAR.UNOFFICIAL"
CLAM_SIG = "Mailgate.Test.ClamExe.UNOFFICIAL"


def client(address: str, timeout: float = 3.0) -> ClamdClient:
    return ClamdClient(AntivirusConfig(engine="clamav", address=address, timeout=timeout))


@pytest.mark.parametrize("name", ["eicar-attachment.eml", "eicar-zip.eml", "eicar-tnef.eml"])
async def test_eicar_in_mail_is_found(clamd_running: Clamd, name: str) -> None:
    verdict = await client(clamd_running.address).scan((FIXTURES / name).read_bytes())
    assert verdict.signature == EICAR_SIG
    assert not verdict.clean


async def test_ham_is_clean(clamd_running: Clamd) -> None:
    verdict = await client(clamd_running.address).scan((FIXTURES / "ham.eml").read_bytes())
    assert verdict.clean and verdict.signature is None


CONTAINERS = [
    "clam.zip",
    "clam.7z",
    "clam.tar.gz",
    "clam.tnef",
    "clam.ole.doc",
    "clam.pdf",
    "clam.exe.bz2",
]


def _mail_with(name: str, data: bytes) -> bytes:
    m = EmailMessage()
    m["From"] = "a@example.org"
    m["To"] = "support@example.test"
    m["Subject"] = "files"
    m.set_content("see attachment\n")
    m.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return bytes(m)


async def test_clamav_testfiles_containers_mailed(clamd_running: Clamd) -> None:
    """Debian's clamav-testfiles: each container, mailed as an attachment, is found by the
    hash signature of the clam.exe inside (clamd decodes MIME, then the container)."""
    assert TESTFILES.is_dir(), "install Debian's clamav-testfiles (see .ci/run)"
    c = client(clamd_running.address)
    found = {}
    for name in CONTAINERS:
        found[name] = (await c.scan(_mail_with(name, (TESTFILES / name).read_bytes()))).signature
    # an mbox with the executable base64-encoded is scanned as the mail it is
    found["clam.exe.mbox.base64"] = (
        await c.scan((TESTFILES / "clam.exe.mbox.base64").read_bytes())
    ).signature
    assert found == {name: CLAM_SIG for name in found}


async def test_over_stream_max_length_is_an_error_not_clean(clamd_running: Clamd) -> None:
    """clamd answers and resets the connection while the payload is still going out; the
    answer must be read every time (a race asyncio lost a third of the time under load), so
    the scan is repeated, over a new connection and over a session."""
    big = b"A" * (3 * 1024 * 1024)  # the fixture's StreamMaxLength is 2M
    for sessions in (0, 4):
        c = client(clamd_running.address)
        c.sessions = sessions
        for _ in range(15):
            with pytest.raises(ScanError) as err:
                await c.scan(big)
            assert err.value.kind == "too-large" and err.value.permanent
        await c.close()


def test_an_answer_before_a_reset_is_still_read_from_the_socket() -> None:
    """`_salvage`: what a peer said before it closed with our data unread (a TCP reset) stays
    readable through a second descriptor of the socket, after the first one is closed."""
    import socket

    from mailgate.scanners.clamd import _salvage

    server = socket.create_server(("127.0.0.1", 0))
    ours = socket.create_connection(server.getsockname())
    theirs, _ = server.accept()
    ours.sendall(b"x" * 100_000)  # left unread: closing then resets the connection
    theirs.sendall(b"stream: INSTREAM size limit exceeded. ERROR\0")
    theirs.close()
    server.close()
    spare = ours.dup()
    with pytest.raises(OSError):
        for _ in range(100):  # the reset arrives: sending fails
            ours.send(b"y" * 65536)
    ours.close()  # what asyncio does on that failure
    try:
        assert _salvage(spare) == b"stream: INSTREAM size limit exceeded. ERROR\0"
        assert _salvage(spare) == b""  # nothing more: an empty answer, not a hang
    finally:
        spare.close()
    assert _salvage(None) == b""


async def test_down_is_unavailable() -> None:
    with pytest.raises(ScanError) as err:
        await client(f"127.0.0.1:{free_port()}").scan(b"hello")
    assert err.value.kind == "unavailable"


async def _serve(
    answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> Any:
    return await asyncio.start_server(answer, "127.0.0.1", 0)


async def test_garbage_and_silence() -> None:
    async def garbage(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.read(10)
        w.write(b"I am not clamd\0")
        await w.drain()
        w.close()

    async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)
        w.close()

    for handler, kind, timeout in ((garbage, "protocol", 3.0), (silent, "timeout", 0.3)):
        server = await _serve(handler)
        port = server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(ScanError) as err:
                await client(f"127.0.0.1:{port}", timeout).scan(b"x" * 10)
            assert err.value.kind == kind
        finally:
            server.close()


def test_parse_reply() -> None:
    assert parse_reply("stream: OK").clean
    assert parse_reply("stream: Eicar-Signature FOUND").signature == "Eicar-Signature"
    for bad in ("stream: ", "PONG", "stream: FOUND", "Can't allocate memory ERROR"):
        with pytest.raises(ScanError):
            parse_reply(bad)


# --------------------------------------------------------------------------- the stage


class _Ports(EmptyPorts):
    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs

    async def attachment_bytes(self, sha256: str) -> bytes | None:
        return self.blobs.get(sha256)


def _ctx(cfg: Config, ports: Any = None) -> Context:
    return Context(
        config=cfg.pipeline,
        root=cfg,
        ports=ports or EmptyPorts(),
        rules=load_rules(cfg),
        msg_id="m1",
    )


def _raw(data: bytes) -> Callable[[str], Awaitable[bytes]]:
    async def get(msg_id: str) -> bytes:
        return data

    return get


async def test_stage_virus_names_the_attachment(clamd_running: Clamd) -> None:
    from mailgate.mime.parse import parse_message

    raw = (FIXTURES / "eicar-zip.eml").read_bytes()
    blobs: dict[str, bytes] = {}

    def sink(data: bytes) -> str:
        import hashlib

        sha = hashlib.sha256(data).hexdigest()
        blobs[sha] = data
        return sha

    env: Any = parse_message(raw, blob_sink=sink)
    cfg = Config(antivirus=AntivirusConfig(engine="clamav", address=clamd_running.address))
    stage = build_stage(DEFAULT_STAGE, cfg, Services(raw_message=_raw(raw)))
    ctx = _ctx(cfg, _Ports(blobs))
    assert await stage.run(env, ctx) is None
    assert env["antivirus"] == {
        "engine": "clamav",
        "clean": False,
        "signature": EICAR_SIG,
        "error": None,
        "attachments": ["report.zip"],
    }
    assert ctx.quarantine[0].reason == "virus"
    assert EICAR_SIG in ctx.quarantine[0].detail and "report.zip" in ctx.quarantine[0].detail


@pytest.fixture
def down_address() -> str:
    return f"127.0.0.1:{free_port()}"


@pytest.mark.parametrize("policy", ["defer", "continue", "quarantine"])
async def test_stage_outage_obeys_on_error(down_address: str, policy: str) -> None:
    cfg = Config(
        antivirus=AntivirusConfig(engine="clamav", address=down_address, on_error=policy)  # type: ignore[arg-type]
    )
    stage = build_stage(DEFAULT_STAGE, cfg, Services(raw_message=_raw(b"Subject: x\r\n\r\nhi\r\n")))
    env: Any = {}
    ctx = _ctx(cfg)
    if policy == "defer":
        with pytest.raises(StageDeferred):
            await stage.run(env, ctx)
    else:
        assert await stage.run(env, ctx) is None
        held = [q.reason for q in ctx.quarantine]
        assert held == (["antivirus-error"] if policy == "quarantine" else [])
    assert env["antivirus"]["clean"] is None
    assert "unavailable" in env["antivirus"]["error"]


async def test_unconfigured_stage_is_a_no_op() -> None:
    cfg = Config(pipeline=PipelineConfig())
    stage = build_stage(DEFAULT_STAGE, cfg, Services(raw_message=_raw(b"")))
    env: Any = {}
    ctx = _ctx(cfg)
    assert await stage.run(env, ctx) is None
    assert "antivirus" not in env and ctx.take_notes() == ["no antivirus engine configured"]


async def test_data_gate(clamd_running: Clamd, down_address: str) -> None:
    """check_at = "data": 554 for a virus, 451 while clamd is down (defer), None for clean."""
    from mailgate.scanners.gate import DataGate

    def gate(address: str, on_error: str = "defer") -> DataGate:
        av = AntivirusConfig(
            engine="clamav",
            address=address,
            check_at="data",
            on_error=on_error,  # type: ignore[arg-type]
        )
        return DataGate(Config(antivirus=av))

    facts: dict[str, Any] = {"ip": "192.0.2.1", "helo": "h", "mail_from": "a@b.c", "rcpt_to": []}
    virus = (FIXTURES / "eicar-attachment.eml").read_bytes()
    ham = (FIXTURES / "ham.eml").read_bytes()
    up = gate(clamd_running.address)
    reply = await up.check(virus, **facts)
    assert reply is not None and reply.startswith("554 5.7.1") and EICAR_SIG in reply
    assert await up.check(ham, **facts) is None
    down = await gate(down_address).check(ham, **facts)
    assert down is not None and down.startswith("451 4.7.1")
    assert await gate(down_address, "continue").check(ham, **facts) is None
