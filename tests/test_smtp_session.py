"""The listener's own SMTP protocol (``smtp/session.py``) on real sockets against a real store.

What the protocol itself decides, beyond the replies ``test_smtp_hostile.py`` checks:
pipelined commands and whole pipelined transactions, commands split across reads and ended by a
bare LF, overlong command lines, unknown-command budgets, the STARTTLS plaintext-injection
defence (CVE-2011-0411), ``require_tls``, a client that never reads its replies, a client that
goes away in the middle of DATA, and a handler that fails.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest

from mailgate import metrics
from mailgate.config import DomainConfig, SmtpConfig
from mailgate.smtp.handler import SmtpHandler
from mailgate.smtp.policy import RecipientPolicy
from mailgate.smtp.server import SmtpServer
from mailgate.store.sqlite import SqliteStore
from tests.support.smtp_inproc import inproc_listener
from tests.test_smtp_hostile import self_signed

DOMAINS = [DomainConfig(name="example.test", mailboxes=["support"], tenant="default")]
MSG = b"From: a@example.org\r\nTo: support@example.test\r\nSubject: hi\r\n\r\nhello\r\n"


def _read_replies(f: Any, n: int) -> list[bytes]:
    """``n`` complete replies (a multi-line reply counts once), each as its lines joined."""
    out: list[bytes] = []
    cur = b""
    while len(out) < n:
        line = f.readline()
        if not line:
            break
        cur += line
        if line[3:4] != b"-":
            out.append(cur)
            cur = b""
    return out


def _session(host: str, port: int, script: bytes, replies: int) -> list[bytes]:
    with socket.create_connection((host, port), timeout=10) as s:
        f = s.makefile("rb")
        [banner] = _read_replies(f, 1)
        assert banner.startswith(b"220 "), banner
        s.sendall(script)
        return _read_replies(f, replies)


def _rejected(reason: str) -> float:
    """``mailgate_smtp_rejected{reason=…}`` now (the listener runs in this process)."""
    value = metrics.REGISTRY.get_sample_value("mailgate_smtp_rejected_total", {"reason": reason})
    return value or 0.0


def _stored(tmp: Path) -> int:
    import sqlite3

    db = sqlite3.connect(tmp / "data" / "mailgate.sqlite")
    try:
        return int(db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
    finally:
        db.close()


async def test_two_whole_transactions_pipelined_in_one_write(tmp_path: Path) -> None:
    txn = (
        b"MAIL FROM:<a@example.org>\r\nRCPT TO:<support@example.test>\r\nDATA\r\n" + MSG + b".\r\n"
    )
    script = b"EHLO c.test\r\n" + txn + txn + b"QUIT\r\n"
    async with inproc_listener(tmp_path) as (host, port, _store):
        got = await asyncio.to_thread(_session, host, port, script, 9)
    codes = [r[:3] for r in got]
    assert codes == [b"250", b"250", b"250", b"354", b"250", b"250", b"250", b"354", b"250"]
    assert got[4].startswith(b"250 2.0.0 OK: queued as msg_"), got[4]
    assert got[8].startswith(b"250 2.0.0 OK: queued as msg_"), got[8]
    assert got[4] != got[8]
    assert _stored(tmp_path) == 2


async def test_commands_split_across_reads_and_bare_lf(tmp_path: Path) -> None:
    def run() -> list[bytes]:
        with socket.create_connection((host, port), timeout=10) as s:
            f = s.makefile("rb")
            _read_replies(f, 1)
            for piece in (b"EH", b"LO c.te", b"st\n", b"NO", b"OP\r", b"\n"):
                s.sendall(piece)
                time.sleep(0.02)
            return _read_replies(f, 2)

    async with inproc_listener(tmp_path) as (host, port, _store):
        ehlo, noop = await asyncio.to_thread(run)
    assert ehlo.startswith(b"250-mx.test\r\n") and ehlo.endswith(b"250 HELP\r\n"), ehlo
    assert noop == b"250 2.0.0 OK\r\n"


async def test_an_overlong_command_line_is_refused_and_the_session_goes_on(
    tmp_path: Path,
) -> None:
    long_arg = b"x" * 5000
    script = b"EHLO c.test\r\nNOOP " + long_arg + b"\r\n" + b"NOOP\r\nHELO " + long_arg + b"\r\n"

    async with inproc_listener(tmp_path) as (host, port, _store):
        got = await asyncio.to_thread(_session, host, port, script, 4)

        def trickled() -> list[bytes]:
            # a line with no end in sight, sent in pieces: discarded as it comes, one 500 at its end
            with socket.create_connection((host, port), timeout=10) as s:
                f = s.makefile("rb")
                _read_replies(f, 1)
                for _ in range(20):
                    s.sendall(b"y" * 4096)
                s.sendall(b"\r\nNOOP\r\n")
                return _read_replies(f, 2)

        tail = await asyncio.to_thread(trickled)
    assert got[1].startswith(b"500 5.5.2 Command line too long"), got[1]
    assert got[2] == b"250 2.0.0 OK\r\n"
    assert got[3].startswith(b"500 5.5.2 Command line too long"), got[3]
    assert tail[0].startswith(b"500 5.5.2 Command line too long"), tail
    assert tail[1] == b"250 2.0.0 OK\r\n"


async def test_mail_from_with_size_and_smtputf8_fits_after_ehlo(tmp_path: Path) -> None:
    # a 512-byte command limit, and a path plus both parameters that take 36 bytes more
    local = "a" * 64
    domain = ".".join(["d" * 60] * 7) + ".org"
    cmd = f"MAIL FROM:<{local}@{domain}> SIZE=12345678 SMTPUTF8 BODY=8BITMIME".encode()
    assert 512 < len(cmd) <= 548
    async with inproc_listener(tmp_path) as (host, port, _store):
        got = await asyncio.to_thread(
            _session,
            host,
            port,
            b"EHLO c.test\r\n" + cmd + b"\r\nRSET\r\nHELO c\r\n" + cmd + b"\r\n",
            5,
        )
    assert got[1].startswith(b"250 2.1.0 "), got[1]
    assert got[3].startswith(b"250 mx.test"), got[3]
    assert got[4].startswith(b"500 5.5.2 Command line too long"), got[4]  # HELO: no extension


async def test_unknown_commands_end_the_session_after_five(tmp_path: Path) -> None:
    script = b"EHLO c.test\r\n" + b"".join(b"BOGUS%d\r\n" % i for i in range(5)) + b"NOOP\r\n"

    def run() -> tuple[list[bytes], bytes]:
        with socket.create_connection((host, port), timeout=10) as s:
            f = s.makefile("rb")
            _read_replies(f, 1)
            s.sendall(script)
            got = _read_replies(f, 6)
            return got, f.read()

    async with inproc_listener(tmp_path) as (host, port, _store):
        got, rest = await asyncio.to_thread(run)
    assert all(r.startswith(b'500 5.5.2 Error: command "BOGUS') for r in got[1:5]), got
    assert got[5].startswith(b"502 5.5.1 Too many unrecognized commands"), got[5]
    assert rest == b""  # closed: the NOOP was never answered


async def test_empty_line_and_commands_before_helo(tmp_path: Path) -> None:
    script = (
        b"\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<support@example.test>\r\nDATA\r\n"
        b"EHLO c.test\r\nMAIL FROM:<a@example.org>\r\nMAIL FROM:<b@example.org>\r\n"
        b"RCPT TO:<support@example.test> NOTIFY=NEVER\r\nHELP MAIL\r\nHELP NOPE\r\n"
    )
    async with inproc_listener(tmp_path) as (host, port, _store):
        got = await asyncio.to_thread(_session, host, port, script, 10)
    assert got[0].startswith(b"500 5.5.2 Error: bad syntax"), got[0]
    for r in got[1:4]:
        assert r.startswith(b"503 5.5.1 Error: send HELO first"), r
    assert got[5].startswith(b"250 2.1.0 "), got[5]
    assert got[6].startswith(b"503 5.5.1 Error: nested MAIL command"), got[6]
    assert got[7].startswith(b"555 5.5.4 RCPT TO parameters not recognized"), got[7]
    assert got[8] == b"250 2.0.0 Syntax: MAIL FROM: <address> [SP <mail-parameters>]\r\n"
    assert got[9].startswith(b"501 5.5.4 Supported commands: DATA EHLO HELO HELP MAIL"), got[9]


def _tls_client() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def test_plaintext_pipelined_after_starttls_is_dropped(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path / "tls", "mx.test")

    def run() -> tuple[bytes, bytes, list[bytes]]:
        with socket.create_connection((host, port), timeout=10) as raw:
            f = raw.makefile("rb")
            _read_replies(f, 1)
            raw.sendall(b"EHLO c.test\r\n")
            [ehlo] = _read_replies(f, 1)
            # the injection: a command sent in clear together with STARTTLS
            raw.sendall(b"STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n")
            [ready] = _read_replies(f, 1)
            with _tls_client().wrap_socket(raw, server_hostname="mx.test") as s:
                tf = s.makefile("rb")
                s.sendall(
                    b"MAIL FROM:<a@example.org>\r\nEHLO c.test\r\nMAIL FROM:<a@example.org>\r\n"
                )
                return ehlo, ready, _read_replies(tf, 3)

    async with inproc_listener(tmp_path, tls_cert=cert, tls_key=key) as (host, port, _store):
        ehlo, ready, after = await asyncio.to_thread(run)
    assert b"250-STARTTLS" in ehlo
    assert ready.startswith(b"220 2.0.0 Ready to start TLS"), ready
    # the injected MAIL got no reply, the EHLO was forgotten, and a new one works
    assert after[0].startswith(b"503 5.5.1 Error: send HELO first"), after[0]
    assert after[1].startswith(b"250-mx.test") and b"STARTTLS" not in after[1], after[1]
    assert after[2].startswith(b"250 2.1.0 "), after[2]


async def test_require_tls_refuses_mail_in_clear(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path / "tls", "mx.test")
    script = b"EHLO c.test\r\nMAIL FROM:<a@example.org>\r\nNOOP\r\n"
    async with inproc_listener(tmp_path, tls_cert=cert, tls_key=key, require_tls=True) as (
        host,
        port,
        _store,
    ):
        got = await asyncio.to_thread(_session, host, port, script, 3)
    assert got[1].startswith(b"530 5.7.0 Must issue a STARTTLS command first"), got[1]
    assert got[2] == b"250 2.0.0 OK\r\n"


async def test_a_client_that_never_reads_does_not_stop_the_others(tmp_path: Path) -> None:
    async with inproc_listener(tmp_path) as (host, port, _store):
        hog = socket.create_connection((host, port), timeout=10)
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 5
        try:
            # NOOPs as fast as the server takes them, never reading a reply: the server's
            # writes back up, it stops reading this client, and our sends stall
            while time.monotonic() < deadline and sent < 64 << 20:
                try:
                    sent += hog.send(b"NOOP\r\n" * 2048)
                except BlockingIOError:
                    await asyncio.sleep(0.05)
                    try:
                        sent += hog.send(b"NOOP\r\n" * 2048)
                    except BlockingIOError:
                        break
                await asyncio.sleep(0)
            assert sent < 64 << 20  # the server stopped reading
            script = (
                b"EHLO c.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<support@example.test>\r\n"
                b"DATA\r\n" + MSG + b".\r\nQUIT\r\n"
            )
            got = await asyncio.to_thread(_session, host, port, script, 6)
        finally:
            hog.close()
    assert got[4].startswith(b"250 2.0.0 OK: queued as "), got
    assert got[5].startswith(b"221 2.0.0 "), got


async def test_a_client_gone_in_the_middle_of_data_leaves_nothing_behind(tmp_path: Path) -> None:
    async with inproc_listener(tmp_path) as (host, port, _store):

        def run() -> None:
            with socket.create_connection((host, port), timeout=10) as s:
                f = s.makefile("rb")
                _read_replies(f, 1)
                s.sendall(
                    b"EHLO c.test\r\nMAIL FROM:<a@example.org>\r\n"
                    b"RCPT TO:<support@example.test>\r\nDATA\r\n" + MSG[:30]
                )
                _read_replies(f, 4)

        for _ in range(5):
            await asyncio.to_thread(run)
        script = (
            b"EHLO c.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<support@example.test>\r\n"
            b"DATA\r\n" + MSG + b".\r\n"
        )
        got = await asyncio.to_thread(_session, host, port, script, 5)
        await asyncio.sleep(0.1)
    assert got[4].startswith(b"250 2.0.0 OK: queued as "), got
    assert _stored(tmp_path) == 1


class _FailingSpool:
    async def spool(self, *records: Any) -> None:
        raise RuntimeError("disk on fire")


async def test_a_failing_spool_is_451_and_the_session_goes_on(tmp_path: Path) -> None:
    script = (
        b"EHLO c.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<support@example.test>\r\n"
        b"DATA\r\n" + MSG + b".\r\nNOOP\r\n"
    )
    async with inproc_listener(tmp_path, spool=_FailingSpool()) as (host, port, _store):
        got = await asyncio.to_thread(_session, host, port, script, 6)
    assert got[4].startswith(b"451 4.3.0 "), got[4]
    assert got[5] == b"250 2.0.0 OK\r\n"


async def test_a_failed_tls_handshake_closes_only_that_session(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path / "tls", "mx.test")

    def garbage() -> bytes:
        with socket.create_connection((host, port), timeout=10) as s:
            f = s.makefile("rb")
            _read_replies(f, 1)
            s.sendall(b"EHLO c.test\r\nSTARTTLS\r\n")
            _read_replies(f, 2)
            s.sendall(b"this is not a TLS client hello\r\n" * 4)
            return f.read()  # the server closes

    async with inproc_listener(tmp_path, tls_cert=cert, tls_key=key) as (host, port, _store):
        assert await asyncio.to_thread(garbage) == b""
        script = b"EHLO c.test\r\nNOOP\r\n"
        got = await asyncio.to_thread(_session, host, port, script, 2)
    assert got[1] == b"250 2.0.0 OK\r\n"


def _proxy_v2(src: str, dst: str, sport: int, dport: int) -> bytes:
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    addrs = socket.inet_aton(src) + socket.inet_aton(dst) + sport.to_bytes(2, "big")
    addrs += dport.to_bytes(2, "big")
    return sig + bytes([0x21, 0x11]) + len(addrs).to_bytes(2, "big") + addrs


async def test_proxy_v2_header_and_a_bad_header(tmp_path: Path) -> None:
    script = (
        b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<support@example.test>\r\nDATA\r\n"
        + MSG
        + b".\r\nQUIT\r\n"
    )
    async with inproc_listener(tmp_path, proxy_protocol=True) as (host, port, store):

        def run(header: bytes) -> list[bytes]:
            with socket.create_connection((host, port), timeout=10) as s:
                s.sendall(header)
                f = s.makefile("rb")
                first = _read_replies(f, 1)
                if not first:
                    return []
                s.sendall(script)
                return first + _read_replies(f, 6)

        got = await asyncio.to_thread(run, _proxy_v2("198.51.100.7", "10.0.0.1", 40000, 25))
        refused = await asyncio.to_thread(run, b"PROXY NONSENSE\r\n")
        rows = await store.list_messages()
        row = await store.get_message_row(rows[0].id)
    assert got[0].startswith(b"220 ") and got[5].startswith(b"250 2.0.0 OK: queued"), got
    assert row["client_ip"] == "198.51.100.7"
    assert refused == []  # closed without a banner
    assert len(rows) == 1


async def test_commands_after_an_oversized_message_are_answered(tmp_path: Path) -> None:
    big = b"Subject: big\r\n\r\n" + b"x" * 3000 + b"\r\n"
    script = (
        b"EHLO c.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<support@example.test>\r\nDATA\r\n"
        + big
        + b".\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<support@example.test>\r\nDATA\r\n"
        + MSG
        + b".\r\n"
    )
    async with inproc_listener(tmp_path, max_message_size=2000) as (host, port, _store):
        got = await asyncio.to_thread(_session, host, port, script, 9)
    assert got[4].startswith(b"552 5.3.4 "), got[4]
    assert got[8].startswith(b"250 2.0.0 OK: queued as "), got[8]
    assert _stored(tmp_path) == 1


async def test_a_harvesting_client_is_cut_after_max_errors(tmp_path: Path) -> None:
    guesses = b"".join(b"RCPT TO:<guess%d@example.test>\r\n" % i for i in range(10))
    script = b"EHLO c.test\r\nMAIL FROM:<a@example.org>\r\n" + guesses + b"NOOP\r\n"

    def run() -> tuple[list[bytes], bytes]:
        with socket.create_connection((host, port), timeout=10) as s:
            f = s.makefile("rb")
            _read_replies(f, 1)
            s.sendall(script)
            got = _read_replies(f, 2 + 5 + 1)
            return got, f.read()

    cuts = _rejected("too-many-errors")
    async with inproc_listener(tmp_path, max_errors=5) as (host, port, _store):
        got, rest = await asyncio.to_thread(run)
    assert _rejected("too-many-errors") == cuts + 1
    assert all(r.startswith(b"550 5.1.1 ") for r in got[2:7]), got
    assert got[7].startswith(b"421 4.7.0 Too many errors"), got[7]
    assert rest == b""  # closed: nothing after the 421


async def test_a_delivery_resets_the_error_count_and_452_is_not_an_error(tmp_path: Path) -> None:
    bad = b"RCPT TO:<nobody@example.test>\r\n"
    txn = (
        b"MAIL FROM:<a@example.org>\r\n" + bad + bad + b"RCPT TO:<support@example.test>\r\n"
        b"RCPT TO:<billing@example.test>\r\nRCPT TO:<x@acme.support.example.test>\r\n"
        b"RCPT TO:<y@acme.support.example.test>\r\nDATA\r\n" + MSG + b".\r\n"
    )
    # per transaction: 2 errors (550), the recipient limit answers 452 twice, then a delivery
    script = b"EHLO c.test\r\n" + txn + txn + txn + b"NOOP\r\n"
    async with inproc_listener(tmp_path, max_errors=3, max_recipients=2) as (host, port, _store):
        got = await asyncio.to_thread(_session, host, port, script, 1 + 3 * 9 + 1)
    assert got[-1] == b"250 2.0.0 OK\r\n", got[-3:]
    assert sum(r.startswith(b"250 2.0.0 OK: queued") for r in got) == 3
    assert sum(r.startswith(b"452 4.5.3 ") for r in got) == 6
    assert _stored(tmp_path) == 3


def _data_in_pieces(host: str, port: int, pieces: list[bytes], after: bytes = b"") -> list[bytes]:
    """One message whose DATA arrives in ``pieces`` (a pause between them, so each is its own
    read), then ``after``; the replies from MAIL on."""
    with socket.create_connection((host, port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        f = s.makefile("rb")
        _read_replies(f, 1)
        s.sendall(
            b"EHLO c.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<support@example.test>\r\nDATA\r\n"
        )
        got = _read_replies(f, 4)[1:]
        for piece in pieces:
            s.sendall(piece)
            time.sleep(0.05)
        got += _read_replies(f, 1)
        if after:
            s.sendall(after)
            got += _read_replies(f, after.count(b"\r\n"))
        return got


async def test_data_line_limit_across_and_inside_reads(tmp_path: Path) -> None:
    head = b"Subject: l\r\n\r\n"
    z99, z100 = b"z" * 99, b"z" * 100  # with its CR a line of 99 is 100 long: the limit
    cases = [
        ([head + z99[:40], z99[40:80], z99[80:] + b"\r\n.\r\n"], b"250 "),
        ([head + z100[:40], z100[40:80], z100[80:] + b"\r\n.\r\n"], b"500 5.5.6 "),
        ([head + b"a\r\n" + z100 + b"\r\nb\r\n.\r\n"], b"500 5.5.6 "),  # inside one read
        ([head + b"a\r\n" + z100 * 3 + b"\r\nb\r\n" + b"c\r\n" * 40 + b".\r\n"], b"500 5.5.6 "),
        ([head + z99 + b"\r", b"\n" + z99 + b"\r\n.\r\n"], b"250 "),  # CR | LF across reads
        ([head + z99 + b"\r\n", b".\r\n"], b"250 "),
        ([head + b"a\r\n" + z99 * 2 + b"\r\n", b".\r\n"], b"500 5.5.6 "),
    ]
    async with inproc_listener(tmp_path, max_line_length=100) as (host, port, _store):
        for pieces, want in cases:
            got = await asyncio.to_thread(_data_in_pieces, host, port, pieces)
            assert got[:3] == [b"250 2.1.0 Sender OK\r\n", b"250 2.1.5 Recipient OK\r\n", got[2]]
            assert got[3].startswith(want), (pieces, got)
        # a long line after the dot is the next command's (limited as a command), not DATA's
        got = await asyncio.to_thread(
            _data_in_pieces, host, port, [head + b"ok\r\n.\r\nNOOP " + b"x" * 150 + b"\r\n"]
        )
        assert got[3].startswith(b"250 2.0.0 OK: queued"), got
    assert _stored(tmp_path) == 4


async def test_data_size_limit_is_exact(tmp_path: Path) -> None:
    too_big = _rejected("too-big")
    async with inproc_listener(tmp_path, max_message_size=1000) as (host, port, _store):
        body = b"Subject: s\r\n\r\n"
        exact = body + b"y" * (1000 - len(body) - 2) + b"\r\n"
        assert len(exact) == 1000
        got = await asyncio.to_thread(
            _data_in_pieces, host, port, [exact[:500], exact[500:] + b".\r\n"]
        )
        assert got[3].startswith(b"250 2.0.0 OK: queued"), got
        over = b"y" + exact
        got = await asyncio.to_thread(
            _data_in_pieces, host, port, [over[:500], over[500:], b".\r\n"]
        )
        assert got[3].startswith(b"552 5.3.4 "), got
        # counted as it arrives, before dot-stuffing is removed (the reader bounds its memory by
        # what it holds): 1014 bytes on the wire are too many though 764 would be stored
        stuffed = body + b"..\r\n" * 250
        got = await asyncio.to_thread(_data_in_pieces, host, port, [stuffed + b".\r\n"])
        assert got[3].startswith(b"552 5.3.4 "), got
    assert _rejected("too-big") == too_big + 2


async def test_idle_timeout_still_runs_after_a_slow_data(tmp_path: Path) -> None:
    def run() -> tuple[list[bytes], bytes, float]:
        pieces = [b"Subject: slow\r\n\r\n"] + [b"line\r\n"] * 4
        with socket.create_connection((host, port), timeout=10) as s:
            f = s.makefile("rb")
            _read_replies(f, 1)
            s.sendall(
                b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<support@example.test>\r\nDATA\r\n"
            )
            _read_replies(f, 4)
            for piece in pieces:  # 2 s of DATA, a chunk every 0.5 s: never idle for 1 s
                s.sendall(piece)
                time.sleep(0.5)
            s.sendall(b".\r\n")
            got = _read_replies(f, 1)
            t0 = time.monotonic()
            return got, f.readline(), time.monotonic() - t0

    async with inproc_listener(tmp_path, idle_timeout=1.0) as (host, port, _store):
        got, cut, waited = await asyncio.to_thread(run)
    assert got[0].startswith(b"250 2.0.0 OK: queued"), got
    assert cut.startswith(b"421 4.4.2 Idle timeout"), cut
    assert 0.8 <= waited <= 2.5, waited


async def test_banner_starttls_without_tls_and_odd_verbs(tmp_path: Path) -> None:
    script = (
        b"EHLO c.test\r\nSTARTTLS\r\n\xc3\xa9HLO x\r\n"
        + b"Y" * 100
        + b"\r\nQUIT now\r\nRSET x\r\nHELO\r\nEHLO\r\nVRFY\r\nVRFY <a@b.c>\r\nVRFY <@\r\nEXPN x\r\n"
    )

    def run() -> tuple[bytes, list[bytes]]:
        with socket.create_connection((host, port), timeout=10) as s:
            f = s.makefile("rb")
            banner = f.readline()
            s.sendall(script)
            return banner, _read_replies(f, 12)

    async with inproc_listener(tmp_path) as (host, port, _store):
        banner, got = await asyncio.to_thread(run)
    assert banner == b"220 mx.test mailgate ESMTP\r\n"
    assert got[1] == b"454 4.7.0 TLS not available\r\n"
    assert got[2] == b"500 5.5.2 Error: bad syntax\r\n"  # a verb that is not ASCII
    assert got[3] == b'500 5.5.2 Error: command "' + b"Y" * 32 + b'" not recognized\r\n'
    assert got[4] == b"501 5.5.4 Syntax: QUIT\r\n"
    assert got[5] == b"501 5.5.4 Syntax: RSET\r\n"
    assert got[6] == b"501 5.5.4 Syntax: HELO hostname\r\n"
    assert got[7] == b"501 5.5.4 Syntax: EHLO hostname\r\n"
    assert got[8] == b"501 5.5.4 Syntax: VRFY <address>\r\n"
    assert got[9] == b"252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery\r\n"
    assert got[10] == b"502 5.5.1 Could not VRFY that address\r\n"
    assert got[11] == b"502 5.5.1 EXPN not implemented\r\n"


async def test_starttls_with_an_argument_is_501(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path / "tls", "mx.test")
    async with inproc_listener(tmp_path, tls_cert=cert, tls_key=key) as (host, port, _store):
        got = await asyncio.to_thread(
            _session, host, port, b"EHLO c.test\r\nSTARTTLS now\r\nNOOP\r\n", 3
        )
    assert got[1] == b"501 5.5.4 Syntax: STARTTLS\r\n"
    assert got[2] == b"250 2.0.0 OK\r\n"


async def test_commands_keep_a_session_from_idling_out(tmp_path: Path) -> None:
    def run() -> list[bytes]:
        with socket.create_connection((host, port), timeout=10) as s:
            f = s.makefile("rb")
            _read_replies(f, 1)
            got = []
            for _ in range(5):  # 2 s of NOOPs, one every 0.4 s, with a 1 s idle timeout
                s.sendall(b"NOOP\r\n")
                got += _read_replies(f, 1)
                time.sleep(0.4)
            got.append(f.readline())  # then silence: cut
            return got

    async with inproc_listener(tmp_path, idle_timeout=1.0) as (host, port, _store):
        got = await asyncio.to_thread(run)
    assert got[:5] == [b"250 2.0.0 OK\r\n"] * 5
    assert got[5].startswith(b"421 4.4.2 Idle timeout"), got[5]


async def test_nothing_pipelined_after_quit_is_read(tmp_path: Path) -> None:
    script = (
        b"EHLO c.test\r\nQUIT\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<support@example.test>\r\n"
        b"DATA\r\n" + MSG + b".\r\n"
    )

    def run() -> bytes:
        with socket.create_connection((host, port), timeout=10) as s:
            f = s.makefile("rb")
            _read_replies(f, 1)
            s.sendall(script)
            return f.read()

    async with inproc_listener(tmp_path) as (host, port, _store):
        rest = await asyncio.to_thread(run)
        await asyncio.sleep(0.2)
    assert rest.endswith(b"250 HELP\r\n221 2.0.0 Bye\r\n"), rest  # the EHLO's, then the 221
    assert _stored(tmp_path) == 0


async def test_an_empty_line_at_the_front_of_the_buffer(tmp_path: Path) -> None:
    async with inproc_listener(tmp_path) as (host, port, _store):
        got = await asyncio.to_thread(_session, host, port, b"\nNOOP\r\n\r\nNOOP\n", 4)
    assert got == [
        b"500 5.5.2 Error: bad syntax\r\n",
        b"250 2.0.0 OK\r\n",
        b"500 5.5.2 Error: bad syntax\r\n",
        b"250 2.0.0 OK\r\n",
    ]


async def test_a_steady_sender_above_the_minimum_rate_is_not_cut(tmp_path: Path) -> None:
    def run() -> list[bytes]:
        # 1 KB every 0.1 s (10 KB/s) for 1.5 s, three times the grace, against 2 KB/s
        pieces = [b"Subject: steady\r\n\r\n"] + [b"s" * 1022 + b"\r\n"] * 15 + [b".\r\n"]
        return _data_in_pieces(host, port, pieces)

    async with inproc_listener(
        tmp_path, min_data_rate=2000, min_data_rate_grace=0.5, data_timeout=30.0
    ) as (host, port, _store):
        got = await asyncio.to_thread(run)
    assert got[3].startswith(b"250 2.0.0 OK: queued"), got


async def test_command_length_limits_are_exact(tmp_path: Path) -> None:
    noop512 = b"NOOP " + b"x" * (512 - 5)
    mail548 = b"MAIL FROM:<a@example.org> SIZE=1" + b" " * (548 - 32)
    assert len(noop512) == 512 and len(mail548) == 548
    script = (
        b"EHLO c.test\r\n"
        + noop512
        + b"\r\n"
        + noop512
        + b"x\r\n"
        + mail548
        + b"x\r\n"
        + mail548
        + b"\r\n"
    )
    async with inproc_listener(tmp_path) as (host, port, _store):
        got = await asyncio.to_thread(_session, host, port, script, 5)
    assert got[1] == b"250 2.0.0 OK\r\n"
    assert got[2].startswith(b"500 5.5.2 Command line too long"), got[2]
    assert got[3].startswith(b"500 5.5.2 Command line too long"), got[3]
    assert got[4].startswith(b"250 2.1.0 "), got[4]


async def test_the_end_of_a_discarded_long_line_is_not_a_command(tmp_path: Path) -> None:
    def run() -> list[bytes]:
        with socket.create_connection((host, port), timeout=10) as s:
            f = s.makefile("rb")
            _read_replies(f, 1)
            s.sendall(b"NOOP " + b"x" * 2000)  # no end yet: discarded as it comes
            time.sleep(0.1)
            s.sendall(b"\r\nNOOP\r\n")
            return _read_replies(f, 2)

    async with inproc_listener(tmp_path) as (host, port, _store):
        got = await asyncio.to_thread(run)
    assert got[0].startswith(b"500 5.5.2 Command line too long"), got
    assert got[1] == b"250 2.0.0 OK\r\n"


class _BrokenRcpt(SmtpHandler):
    def rcpt(self, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        raise KeyError("a bug")


async def test_a_handler_bug_is_451_logged_and_the_session_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = dataclasses.replace(SmtpConfig(listen="127.0.0.1:0", hostname="mx.test"), greet_delay=0.0)
    store = SqliteStore(tmp_path / "data")
    await store.open()
    server = SmtpServer(cfg, _BrokenRcpt(cfg, policy=RecipientPolicy(DOMAINS), spool=store))
    host, port = await server.start()
    script = b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<support@example.test>\r\nNOOP\r\n"
    try:
        with caplog.at_level(logging.ERROR, logger="mailgate.smtp"):
            got = await asyncio.to_thread(_session, host, port, script, 4)
    finally:
        await server.stop(grace=0.5)
        await store.close()
    assert got[2] == b"451 4.3.0 Internal error, try again later\r\n"
    assert got[3] == b"250 2.0.0 OK\r\n"
    [rec] = [r for r in caplog.records if r.getMessage() == "smtp session error"]
    assert rec.__dict__["fields"] == {"error": "KeyError"}


async def test_an_early_talker_is_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = _rejected("early-talker")

    def run() -> bytes:
        with socket.create_connection((host, port), timeout=10) as s:
            s.sendall(b"EHLO too.early\r\n")
            return s.makefile("rb").readline()

    async with inproc_listener(tmp_path, greet_delay=0.3) as (host, port, _store):
        with caplog.at_level(logging.INFO, logger="mailgate.smtp"):
            first = await asyncio.to_thread(run)
    assert first.startswith(b"554 5.5.1 "), first
    assert _rejected("early-talker") == before + 1
    [rec] = [r for r in caplog.records if r.getMessage() == "early talker refused"]
    assert rec.__dict__["fields"]["client_ip"] == "127.0.0.1"
    assert rec.__dict__["fields"]["waited"] == 0.3
