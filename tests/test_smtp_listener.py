"""The SMTP front end in-process: real sockets on 127.0.0.1, a real SQLite store.

Covers the chunked DATA reader (byte-exact bodies, dot-stuffing, SMTP smuggling, pipelining,
limits), recipient policy replies, and the 451 on a store failure.
"""

from __future__ import annotations

import asyncio
import smtplib
import socket
from pathlib import Path

import pytest

from mailgate.store.base import StoreError
from tests.support.smtp_inproc import inproc_listener


def _send(
    host: str,
    port: int,
    raw: bytes,
    rcpts: list[str],
    sender: str = "a@example.org",
    options: list[str] | None = None,
) -> tuple[int, bytes]:
    with smtplib.SMTP(host, port, timeout=10, local_hostname="client.test") as c:
        c.ehlo()
        code, resp = c.mail(sender, options or [])
        if code != 250:
            return code, resp
        for r in rcpts:
            code, resp = c.rcpt(r)
            if code >= 400:
                return code, resp
        return c.data(raw)


def _dialogue(host: str, port: int, script: bytes, wait_for: int) -> list[bytes]:
    """Send raw protocol bytes in one write (pipelined) and read replies until ``wait_for`` lines."""
    with socket.create_connection((host, port), timeout=10) as s:
        f = s.makefile("rb")
        lines = [f.readline()]  # banner
        s.sendall(script)
        while len(lines) < wait_for:
            line = f.readline()
            if not line:
                break
            lines.append(line)
        return lines


async def test_body_is_stored_byte_exact(tmp_path: Path) -> None:
    body = (
        b"From: a@example.org\r\nTo: support@example.test\r\nSubject: x\r\n\r\n"
        b".leading dot line\r\n..two dots\r\n\xe9\xe8 8-bit bytes\r\nlast line no dot\r\n"
    )
    async with inproc_listener(tmp_path) as (host, port, store):
        code, resp = await asyncio.to_thread(_send, host, port, body, ["support@example.test"])
        assert code == 250, resp
        msg_id = resp.decode().rsplit(" ", 1)[-1]
        assert await store.get_raw(msg_id) == body


async def test_large_body_with_leading_dots_is_stored_byte_exact(tmp_path: Path) -> None:
    """A body over many reads: the end of DATA is found in each new piece and dot-stuffed
    lines anywhere (across reads, the very last one) are unstuffed exactly."""
    lines = [b"From: a@example.org", b"Subject: dots", b""]
    for i in range(6000):
        lines.append(b"." * (i % 4) + b"line %d " % i + b"x" * (i % 70))
    lines.append(b".")  # a last line of one dot: sent as "..", right before the terminator
    body = b"\r\n".join(lines) + b"\r\n"
    async with inproc_listener(tmp_path) as (host, port, store):
        for raw in (body, b".a first line with a dot\r\nrest\r\n"):
            code, resp = await asyncio.to_thread(_send, host, port, raw, ["support@example.test"])
            assert code == 250, resp
            msg_id = resp.decode().rsplit(" ", 1)[-1]
            assert await store.get_raw(msg_id) == raw


async def test_smuggled_terminator_is_data(tmp_path: Path) -> None:
    # "\n.\n" and "\r.\r\n" are not the end of DATA (CVE-2024-27305 class); only CRLF.CRLF is.
    script = b"EHLO client.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<support@example.test>\r\nDATA\r\n"
    data = b"Subject: s\r\n\r\nline\n.\nMAIL FROM:<evil@x.test>\r\nline2\r.\r\nend\r\n.\r\nQUIT\r\n"
    async with inproc_listener(tmp_path) as (host, port, store):
        lines = await asyncio.to_thread(_dialogue, host, port, script + data, 14)
        replies = [ln for ln in lines if ln[:3].isdigit() and ln[3:4] == b" "]
        codes = [ln[:3] for ln in replies]
        assert codes[-2:] == [b"250", b"221"], lines
        assert codes.count(b"250") == 4  # MAIL, RCPT, the message, nothing smuggled
        rows = await store.list_messages()
        assert len(rows) == 1
        raw = await store.get_raw(rows[0].id)
        assert raw == b"Subject: s\r\n\r\nline\n.\nMAIL FROM:<evil@x.test>\r\nline2\r.\r\nend\r\n"


async def test_empty_body_and_pipelined_quit(tmp_path: Path) -> None:
    script = b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<support@example.test>\r\nDATA\r\n.\r\nQUIT\r\n"
    async with inproc_listener(tmp_path) as (host, port, store):
        lines = await asyncio.to_thread(_dialogue, host, port, script, 13)
        assert lines[-1].startswith(b"221"), lines
        rows = await store.list_messages()
        assert len(rows) == 1 and rows[0].mail_from == "" and rows[0].size == 0


async def test_terminator_split_across_reads(tmp_path: Path) -> None:
    async with inproc_listener(tmp_path) as (host, port, store):

        def run() -> bytes:
            with socket.create_connection((host, port), timeout=10) as s:
                f = s.makefile("rb")
                f.readline()
                for cmd in (
                    b"EHLO c\r\n",
                    b"MAIL FROM:<a@b.test>\r\n",
                    b"RCPT TO:<support@example.test>\r\n",
                    b"DATA\r\n",
                ):
                    s.sendall(cmd)
                    while True:
                        line = f.readline()
                        if line[3:4] == b" ":
                            break
                s.sendall(b"Subject: split\r\n\r\nbody\r")
                s.sendall(b"\n.")
                s.sendall(b"\r")
                s.sendall(b"\n")
                return f.readline()

        reply = await asyncio.to_thread(run)
        assert reply.startswith(b"250"), reply
        rows = await store.list_messages()
        assert await store.get_raw(rows[0].id) == b"Subject: split\r\n\r\nbody\r\n"


async def test_large_message_in_many_chunks(tmp_path: Path) -> None:
    line = b"x" * 76 + b"\r\n"
    body = b"Subject: big\r\n\r\n" + line * 40000 + b".dot\r\n"  # ~3 MB, many 64 KiB reads
    async with inproc_listener(tmp_path, max_message_size=10 * 1024 * 1024) as (host, port, store):
        code, resp = await asyncio.to_thread(_send, host, port, body, ["support@example.test"])
        assert code == 250
        msg_id = resp.decode().rsplit(" ", 1)[-1]
        assert await store.get_raw(msg_id) == body


async def test_size_limit_declared_and_actual(tmp_path: Path) -> None:
    async with inproc_listener(tmp_path, max_message_size=10_000) as (host, port, store):
        code, _ = await asyncio.to_thread(
            _send, host, port, b"x", ["support@example.test"], "a@example.org", ["SIZE=20000"]
        )
        assert code == 552
        code, resp = await asyncio.to_thread(
            _send,
            host,
            port,
            b"Subject: big\r\n\r\n" + (b"y" * 70 + b"\r\n") * 300,
            ["support@example.test"],
        )
        assert code == 552 and b"5.3.4" in resp
        assert await store.list_messages() == []


async def test_line_length_limit(tmp_path: Path) -> None:
    async with inproc_listener(tmp_path, max_line_length=1000) as (host, port, store):
        code, _ = await asyncio.to_thread(
            _send,
            host,
            port,
            b"Subject: l\r\n\r\n" + b"z" * 5000 + b"\r\n",
            ["support@example.test"],
        )
        assert code == 500
        code, _ = await asyncio.to_thread(
            _send,
            host,
            port,
            b"Subject: l\r\n\r\n" + b"z" * 998 + b"\r\n",
            ["support@example.test"],
        )
        assert code == 250
        assert len(await store.list_messages()) == 1


@pytest.mark.parametrize(
    ("rcpt", "code", "enhanced"),
    [
        ("support@example.test", 250, b"2.1.5"),
        ("Support+T-1042@Example.TEST", 250, b"2.1.5"),
        ("postmaster@example.test", 250, b"2.1.5"),
        ("Postmaster", 250, b"2.1.5"),
        ("nobody", 501, b"5.1.3"),
        ("nobody@example.test", 550, b"5.1.1"),
        ("someone@elsewhere.test", 554, b"5.7.1"),
        ("support@example.test.evil.test", 554, b"5.7.1"),
        ("support%evil.test@example.test", 550, b"5.1.1"),
        ("x@deep.acme.support.example.test", 554, b"5.7.1"),
        ("anyone@acme.support.example.test", 250, b"2.1.5"),
    ],
)
async def test_recipient_policy(tmp_path: Path, rcpt: str, code: int, enhanced: bytes) -> None:
    async with inproc_listener(tmp_path) as (host, port, _store):

        def run() -> tuple[int, bytes]:
            with smtplib.SMTP(host, port, timeout=10) as c:
                c.ehlo()
                c.mail("a@example.org")
                return c.rcpt(rcpt)

        got, resp = await asyncio.to_thread(run)
        assert got == code and resp.startswith(enhanced), resp


async def test_plus_tag_and_tenant_split(tmp_path: Path) -> None:
    async with inproc_listener(tmp_path) as (host, port, store):
        code, _ = await asyncio.to_thread(
            _send,
            host,
            port,
            b"Subject: t\r\n\r\nhi\r\n",
            [
                "support+T-1042@example.test",
                "help@acme.support.example.test",
                "billing@example.test",
            ],
        )
        assert code == 250
        rows = sorted(await store.list_messages(), key=lambda r: r.tenant)
        assert [(r.tenant, r.rcpt_to) for r in rows] == [
            ("acme", ["help@acme.support.example.test"]),
            ("default", ["support+T-1042@example.test", "billing@example.test"]),
        ]


async def test_too_many_recipients(tmp_path: Path) -> None:
    async with inproc_listener(tmp_path, max_recipients=2) as (host, port, _store):

        def run() -> list[int]:
            with smtplib.SMTP(host, port, timeout=10) as c:
                c.ehlo()
                c.mail("a@example.org")
                return [c.rcpt(f"u{i}@acme.support.example.test")[0] for i in range(3)]

        assert await asyncio.to_thread(run) == [250, 250, 452]


async def test_connection_limit_per_ip(tmp_path: Path) -> None:
    async with inproc_listener(tmp_path, max_connections_per_ip=2) as (host, port, _store):

        def run() -> bytes:
            a = socket.create_connection((host, port), timeout=10)
            b = socket.create_connection((host, port), timeout=10)
            try:
                a.makefile("rb").readline()
                b.makefile("rb").readline()
                with socket.create_connection((host, port), timeout=10) as c:
                    return c.makefile("rb").readline()
            finally:
                a.close()
                b.close()

        banner = await asyncio.to_thread(run)
        assert banner.startswith(b"421 4.7.0"), banner


async def test_message_rate_limit(tmp_path: Path) -> None:
    async with inproc_listener(tmp_path, max_messages_per_ip_per_minute=2) as (host, port, _store):

        def run() -> list[int]:
            with smtplib.SMTP(host, port, timeout=10) as c:
                c.ehlo()
                codes = []
                for _ in range(3):
                    codes.append(c.mail("a@example.org")[0])
                    c.rset()
                return codes

        assert await asyncio.to_thread(run) == [250, 250, 450]


class FailingSpool:
    """A spool whose disk is 'full': the listener must answer 451, never 250."""

    async def spool(self, *records: object) -> None:
        raise StoreError("database or disk is full")


async def test_store_failure_answers_451(tmp_path: Path) -> None:
    async with inproc_listener(tmp_path, spool=FailingSpool()) as (host, port, _store):
        code, resp = await asyncio.to_thread(
            _send, host, port, b"Subject: x\r\n\r\nx\r\n", ["support@example.test"]
        )
        assert code == 451 and resp.startswith(b"4.3.0")


async def test_smtputf8_addresses(tmp_path: Path) -> None:
    async with inproc_listener(tmp_path) as (host, port, store):

        def run() -> dict[str, tuple[int, bytes]]:
            with smtplib.SMTP(host, port, timeout=10) as c:
                c.ehlo()
                assert (
                    c.has_extn("smtputf8") and c.has_extn("8bitmime") and c.has_extn("pipelining")
                )
                return c.sendmail(
                    "jürgen@exämple.org",
                    ["josé@acme.support.example.test"],
                    "Subject: ü\r\n\r\nGrüße\r\n".encode(),
                    mail_options=["SMTPUTF8", "BODY=8BITMIME"],
                )

        assert await asyncio.to_thread(run) == {}  # no recipient refused
        rows = await store.list_messages()
        assert rows[0].mail_from == "jürgen@exämple.org"
        assert rows[0].rcpt_to == ["josé@acme.support.example.test"]


async def test_proxy_protocol_gives_the_real_client_ip(tmp_path: Path) -> None:
    script = (
        b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<support@example.test>\r\nDATA\r\n"
        b"Subject: via lb\r\n\r\nhi\r\n.\r\nQUIT\r\n"
    )
    async with inproc_listener(tmp_path, proxy_protocol=True) as (host, port, store):

        def run() -> list[bytes]:
            with socket.create_connection((host, port), timeout=10) as s:
                s.sendall(b"PROXY TCP4 203.0.113.5 10.0.0.1 40000 25\r\n")
                f = s.makefile("rb")
                lines = [f.readline()]  # the banner: commands before it are an early talker's
                s.sendall(script)
                while True:
                    line = f.readline()
                    if not line:
                        break
                    lines.append(line)
                    if line.startswith(b"221"):
                        break
                return lines

        lines = await asyncio.to_thread(run)
        assert lines[-1].startswith(b"221"), lines
        rows = await store.list_messages()
        row = await store.get_message_row(rows[0].id)
        assert row["client_ip"] == "203.0.113.5"


async def test_shutdown_closes_idle_sessions_with_421(tmp_path: Path) -> None:
    import dataclasses

    from mailgate.config import SmtpConfig
    from mailgate.smtp.handler import SmtpHandler
    from mailgate.smtp.policy import RecipientPolicy
    from mailgate.smtp.server import SmtpServer
    from tests.support.smtp_inproc import DOMAINS

    cfg = dataclasses.replace(SmtpConfig(listen="127.0.0.1:0", hostname="mx.test"))
    from mailgate.store.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "d")
    await store.open()
    server = SmtpServer(cfg, SmtpHandler(cfg, policy=RecipientPolicy(DOMAINS), spool=store))
    host, port = await server.start()
    try:
        sock = await asyncio.to_thread(socket.create_connection, (host, port), 10)
        f = sock.makefile("rb")
        assert (await asyncio.to_thread(f.readline)).startswith(b"220")
        await server.stop(grace=30.0)  # idle: must not wait for the grace period
        assert (await asyncio.to_thread(f.readline)).startswith(b"421 4.3.2")
        sock.close()
    finally:
        await store.close()
