"""The SMTP front end against a hostile client: real sockets on 127.0.0.1, a real SQLite store.

Protocol laxity (early talkers, STARTTLS, AUTH, HELP, EHLO keywords, SIZE), connection economics
(per-network caps, DATA deadline, minimum rate, session deadline), IDN recipients, and
``SmtpServer.reload``. Distinct client addresses come from binding 127.N.M.1 (all of 127/8 is
loopback on Linux). Every timing here is a short test config, so each test takes seconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import smtplib
import socket
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from mailgate.config import ConfigError, DomainConfig, SmtpConfig, load_config
from mailgate.smtp.connections import network_of
from mailgate.smtp.handler import SmtpHandler
from mailgate.smtp.policy import RecipientPolicy
from mailgate.smtp.server import SmtpServer, StartupError
from mailgate.store.sqlite import SqliteStore
from tests.support.tls import write_self_signed

DOMAINS = [DomainConfig(name="example.test", mailboxes=["support"], tenant="default")]
MSG = b"From: a@example.org\r\nTo: support@example.test\r\nSubject: hi\r\n\r\nhello\r\n"


@dataclasses.dataclass
class Listener:
    server: SmtpServer
    host: str
    port: int
    store: SqliteStore

    def handler(self, cfg: SmtpConfig, domains: list[DomainConfig]) -> SmtpHandler:
        return SmtpHandler(cfg, policy=RecipientPolicy(domains), spool=self.store)


@asynccontextmanager
async def listener(
    tmp_path: Path, domains: list[DomainConfig] | None = None, **smtp: Any
) -> AsyncIterator[Listener]:
    smtp.setdefault("greet_delay", 0.0)
    cfg = dataclasses.replace(SmtpConfig(listen="127.0.0.1:0", hostname="mx.test"), **smtp)
    store = SqliteStore(tmp_path / "data")
    await store.open()
    handler = SmtpHandler(cfg, policy=RecipientPolicy(domains or DOMAINS), spool=store)
    server = SmtpServer(cfg, handler)
    host, port = await server.start()
    try:
        yield Listener(server, host, port, store)
    finally:
        await server.stop(grace=0.5)
        await store.close()


def connect(lst: Listener, source: str = "127.0.0.1") -> socket.socket:
    s = socket.socket()
    s.settimeout(10)
    s.bind((source, 0))
    s.connect((lst.host, lst.port))
    return s


def self_signed(folder: Path, cn: str) -> tuple[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    write_self_signed(cert_file, key_file, cn)
    return str(cert_file), str(key_file)


def _peer_cn(host: str, port: int) -> str:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP(host, port, timeout=10) as c:
        c.starttls(context=ctx)
        assert c.sock is not None
        der = c.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
    cert = x509.load_der_x509_certificate(der)
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


# --------------------------------------------------------------------------- reload


async def test_reload_new_sessions_get_new_handler_and_tls(tmp_path: Path) -> None:
    cert1, key1 = self_signed(tmp_path / "one", "one.test")
    async with listener(tmp_path, tls_cert=cert1, tls_key=key1) as lst:
        # A session opened before the reload keeps the old policy (only support@example.test).
        old = await asyncio.to_thread(smtplib.SMTP, lst.host, lst.port, timeout=10)
        try:
            await asyncio.to_thread(old.ehlo)
            cert2, key2 = self_signed(tmp_path / "two", "two.test")
            cfg2 = dataclasses.replace(lst.server.cfg, tls_cert=cert2, tls_key=key2)
            other = [DomainConfig(name="other.test", mailboxes=["help"])]
            lst.server.reload(cfg2, lst.handler(cfg2, other))
            await asyncio.to_thread(old.mail, "a@example.org")
            assert (await asyncio.to_thread(old.rcpt, "support@example.test"))[0] == 250
        finally:
            await asyncio.to_thread(old.quit)

        def new_session() -> tuple[int, int]:
            with smtplib.SMTP(lst.host, lst.port, timeout=10) as c:
                c.ehlo()
                c.mail("a@example.org")
                return c.rcpt("support@example.test")[0], c.rcpt("help@other.test")[0]

        assert await asyncio.to_thread(new_session) == (554, 250)
        assert await asyncio.to_thread(_peer_cn, lst.host, lst.port) == "two.test"

        # A cert that cannot be loaded: StartupError, and the old context keeps serving.
        broken = tmp_path / "broken.pem"
        broken.write_text("not a certificate")
        cfg3 = dataclasses.replace(cfg2, tls_cert=str(broken), tls_key=str(broken))
        with pytest.raises(StartupError):
            lst.server.reload(cfg3, lst.handler(cfg3, DOMAINS))
        assert lst.server.cfg is cfg2
        assert await asyncio.to_thread(_peer_cn, lst.host, lst.port) == "two.test"


# --------------------------------------------------------------------------- helpers


def read_reply(f: BinaryIO) -> bytes:
    """One (possibly multi-line) reply; b"" when the server closed the connection."""
    out = b""
    while True:
        line: bytes = f.readline()
        out += line
        if not line or line[3:4] != b"-":
            return out


def dialogue(lst: Listener, commands: list[bytes], source: str = "127.0.0.1") -> list[bytes]:
    """The banner, then one reply per command (sent one at a time)."""
    with connect(lst, source) as s:
        f = s.makefile("rb")
        replies = [read_reply(f)]
        for cmd in commands:
            s.sendall(cmd + b"\r\n")
            replies.append(read_reply(f))
        return replies


def trickle(lst: Listener, source: str, every: float, prelude: list[bytes]) -> tuple[bytes, float]:
    """Reach DATA (``prelude``), then send one byte every ``every`` seconds until cut.

    Returns the last line received and the seconds from the 354 to the cut.
    """
    with connect(lst, source) as s:
        f = s.makefile("rb")
        read_reply(f)
        for cmd in prelude:
            s.sendall(cmd + b"\r\n")
            reply = read_reply(f)
            assert reply[:1] in (b"2", b"3"), reply
        s.settimeout(every)  # from here on raw recv: a file object dies with its first timeout
        started = time.monotonic()
        while time.monotonic() - started < 20:
            try:
                s.sendall(b"x")
                got = s.recv(1000)
            except TimeoutError:
                continue
            except OSError:
                break
            return got, time.monotonic() - started
        return b"", time.monotonic() - started


PRELUDE = [b"EHLO c.test", b"MAIL FROM:<a@example.org>", b"RCPT TO:<support@example.test>", b"DATA"]
ENHANCED = re.compile(rb"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3} ")


# --------------------------------------------------------------------------- protocol laxity


async def test_early_talker_is_refused_and_a_patient_client_is_remembered(tmp_path: Path) -> None:
    async with listener(tmp_path, greet_delay=0.5) as lst:

        def early() -> tuple[bytes, bytes]:
            with connect(lst, "127.0.3.1") as s:
                s.sendall(b"EHLO early.test\r\n")
                f = s.makefile("rb")
                return f.readline(), f.readline()

        first, after = await asyncio.to_thread(early)
        assert first.startswith(b"554 5.5.1 "), first
        assert after == b""  # closed: the EHLO was never served

        def patient() -> float:
            t0 = time.monotonic()
            with connect(lst, "127.0.3.2") as s:
                banner = s.makefile("rb").readline()
                assert banner.startswith(b"220 "), banner
                s.sendall(b"QUIT\r\n")
            return time.monotonic() - t0

        assert await asyncio.to_thread(patient) >= 0.45  # unknown: waits for the banner
        assert await asyncio.to_thread(patient) < 0.3  # passed the test: no wait now
        assert lst.server.history.skips_greet_delay("127.0.3.2")
        assert not lst.server.history.skips_greet_delay("127.0.3.1")


async def test_bytes_buffered_before_the_banner_are_refused_without_a_delay(
    tmp_path: Path,
) -> None:
    # greet_delay 0 (the test config): a PROXY header is read first, so whatever the client
    # sent along with it is already buffered when the banner is due.
    async with listener(tmp_path, proxy_protocol=True) as lst:

        def run() -> bytes:
            with connect(lst) as s:
                s.sendall(b"PROXY TCP4 203.0.113.5 10.0.0.1 40000 25\r\nEHLO c.test\r\n")
                return s.makefile("rb").readline()

        assert (await asyncio.to_thread(run)).startswith(b"554 5.5.1 ")


async def test_starttls_twice_or_before_ehlo_is_503(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path / "tls", "mx.test")
    async with listener(tmp_path, tls_cert=cert, tls_key=key) as lst:
        [_, before] = await asyncio.to_thread(dialogue, lst, [b"STARTTLS"])
        assert before.startswith(b"503 5.5.1 "), before

        def twice() -> tuple[int, bytes]:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            with smtplib.SMTP(lst.host, lst.port, timeout=10) as c:
                c.starttls(context=ctx)
                c.ehlo()
                assert "starttls" not in c.esmtp_features
                assert "auth" not in c.esmtp_features
                return c.docmd("STARTTLS")

        code, text = await asyncio.to_thread(twice)
        assert code == 503 and text.startswith(b"5.5.1 "), (code, text)


async def test_auth_is_502_and_not_in_help(tmp_path: Path) -> None:
    async with listener(tmp_path) as lst:
        _, ehlo, auth, helps, help_auth = await asyncio.to_thread(
            dialogue, lst, [b"EHLO c.test", b"AUTH PLAIN AGZvbwBiYXI=", b"HELP", b"HELP AUTH"]
        )
        assert b"AUTH" not in ehlo
        assert auth.startswith(b"502 5.5.1 "), auth
        assert ENHANCED.match(helps) and b"MAIL" in helps and b"AUTH" not in helps, helps
        assert ENHANCED.match(help_auth) and b"AUTH" not in help_auth, help_auth


async def test_ehlo_keywords(tmp_path: Path) -> None:
    async with listener(tmp_path, max_message_size=1000) as lst:
        _, ehlo = await asyncio.to_thread(dialogue, lst, [b"EHLO c.test"])
        keywords = {ln[4:].split(b" ")[0] for ln in ehlo.splitlines()[1:]}
        assert keywords == {
            b"SIZE",
            b"8BITMIME",
            b"SMTPUTF8",
            b"PIPELINING",
            b"ENHANCEDSTATUSCODES",
            b"HELP",
        }, ehlo
        assert b"250-SIZE 1000\r\n" in ehlo


async def test_every_reply_after_ehlo_has_an_enhanced_status_code(tmp_path: Path) -> None:
    commands = [
        b"EHLO c.test",
        b"NOOP",
        b"DATA",
        b"RCPT TO:<support@example.test>",
        b"MAIL FROM:",
        b"MAIL FROM:<",  # crashes the stdlib address parser: malformed, not "500 Error"
        b"MAIL FROM:<@",
        b"MAIL FROM:<a@example.org> SIZE=2000",
        b"MAIL FROM:<a@example.org> FOO=BAR",
        b"MAIL FROM:<a@example.org>",
        b"MAIL FROM:<a@example.org>",
        b"RCPT TO:<someone@elsewhere.test>",
        b"RCPT TO:<nobody@example.test>",
        b"RCPT TO:<support@example.test>",
        b"DATA extra",
        b"RSET",
        b"VRFY support",
        b"EXPN list",
        b"FOO",
        b"HELP",
        b"QUIT",
    ]
    async with listener(tmp_path, max_message_size=1000) as lst:
        got = await asyncio.to_thread(dialogue, lst, commands)
    by_cmd = dict(zip(commands[1:], got[2:], strict=True))
    for cmd, reply in by_cmd.items():
        assert ENHANCED.match(reply), (cmd, reply)
    assert by_cmd[b"MAIL FROM:<a@example.org> SIZE=2000"].startswith(b"552 5.3.4 ")
    for broken in (b"MAIL FROM:<", b"MAIL FROM:<@"):
        assert by_cmd[broken].startswith(b"553 5.1.3 "), by_cmd[broken]
    assert by_cmd[b"RCPT TO:<someone@elsewhere.test>"].startswith(b"554 5.7.1 ")
    assert by_cmd[b"QUIT"].startswith(b"221 2.0.0 ")


async def test_refused_rcpt_is_logged_with_domain_and_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with listener(tmp_path) as lst:
        with caplog.at_level(logging.INFO, logger="mailgate.smtp"):
            await asyncio.to_thread(
                dialogue,
                lst,
                [b"EHLO c", b"MAIL FROM:<a@example.org>", b"RCPT TO:<secret.guess@elsewhere.test>"],
            )
    [rec] = [r for r in caplog.records if r.getMessage() == "recipient refused"]
    fields = rec.__dict__.get("fields", {})
    assert fields["rcpt_domain"] == "elsewhere.test"
    assert fields["reason"] == "relay-denied"
    assert "secret.guess" not in repr(rec.__dict__)


# --------------------------------------------------------------------------- connection economics


async def test_per_network_cap(tmp_path: Path) -> None:
    async with listener(tmp_path, max_connections_per_ip=10, max_connections_per_network=3) as lst:

        def run() -> tuple[bytes, bytes]:
            held = [connect(lst, f"127.0.5.{n}") for n in (1, 2, 3)]
            try:
                for s in held:
                    assert s.makefile("rb").readline().startswith(b"220 ")
                with connect(lst, "127.0.5.4") as s:
                    same_net = s.makefile("rb").readline()
                with connect(lst, "127.0.6.1") as s:
                    other_net = s.makefile("rb").readline()
                return same_net, other_net
            finally:
                for s in held:
                    s.close()

        same_net, other_net = await asyncio.to_thread(run)
        assert same_net.startswith(b"421 4.7.0 ") and b"network" in same_net, same_net
        assert other_net.startswith(b"220 "), other_net


async def test_reserved_slots_are_kept_for_clients_with_a_clean_history(tmp_path: Path) -> None:
    async with listener(tmp_path, max_connections=4, reserved_connections=2) as lst:

        def run() -> tuple[bytes, bytes]:
            with smtplib.SMTP(lst.host, lst.port, timeout=10) as c:  # 127.0.0.1 delivers once
                c.sendmail("a@example.org", ["support@example.test"], MSG)
            held = [connect(lst, f"127.0.7.{n}") for n in (1, 2)]
            try:
                for s in held:
                    assert s.makefile("rb").readline().startswith(b"220 ")
                with connect(lst, "127.0.8.1") as s:
                    unknown = s.makefile("rb").readline()
                with connect(lst, "127.0.0.1") as s:
                    known = s.makefile("rb").readline()
                return unknown, known
            finally:
                for s in held:
                    s.close()

        unknown, known = await asyncio.to_thread(run)
        assert unknown.startswith(b"421 4.7.0 "), unknown
        assert known.startswith(b"220 "), known


async def test_data_sessions_per_network_cap(tmp_path: Path) -> None:
    async with listener(tmp_path, max_data_per_network=1) as lst:

        def run() -> tuple[bytes, bytes]:
            with connect(lst, "127.0.9.1") as first:
                f = first.makefile("rb")
                read_reply(f)
                for cmd in PRELUDE:
                    first.sendall(cmd + b"\r\n")
                    read_reply(f)  # ends in 354: in DATA
                second = dialogue(lst, PRELUDE, "127.0.9.2")[-1]
                other = dialogue(lst, PRELUDE, "127.0.10.1")[-1]
                return second, other

        second, other = await asyncio.to_thread(run)
        assert second.startswith(b"421 4.7.0 ") and b"transfers" in second, second
        assert other.startswith(b"354 "), other


async def test_data_deadline_cuts_a_trickle(tmp_path: Path) -> None:
    async with listener(tmp_path, data_timeout=1.0, min_data_rate=0) as lst:
        line, took = await asyncio.to_thread(trickle, lst, "127.0.11.1", 0.1, PRELUDE)
    assert line.startswith(b"421 4.4.2 DATA time limit"), line
    assert 0.9 <= took <= 2.0, took


async def test_minimum_rate_cuts_a_slow_sender_but_not_a_fast_one(tmp_path: Path) -> None:
    async with listener(
        tmp_path, data_timeout=30.0, min_data_rate=2000, min_data_rate_grace=0.5
    ) as lst:
        line, took = await asyncio.to_thread(trickle, lst, "127.0.12.1", 0.1, PRELUDE)
        assert line.startswith(b"421 4.4.2 DATA transfer too slow"), line
        assert 0.45 <= took <= 1.5, took

        body = MSG + (b"z" * 998 + b"\r\n") * 200

        def send() -> tuple[int, bytes]:
            with smtplib.SMTP(lst.host, lst.port, timeout=10) as c:
                c.ehlo()
                c.mail("a@example.org")
                c.rcpt("support@example.test")
                return c.data(body)

        code, _ = await asyncio.to_thread(send)
        assert code == 250


async def test_session_deadline_cuts_a_client_that_never_idles(tmp_path: Path) -> None:
    async with listener(tmp_path, session_timeout=1.0) as lst:

        def run() -> tuple[bytes, float]:
            with connect(lst, "127.0.13.1") as s:
                f = s.makefile("rb")
                t0 = time.monotonic()
                read_reply(f)
                while time.monotonic() - t0 < 10:
                    s.sendall(b"NOOP\r\n")
                    reply = read_reply(f)
                    if not reply.startswith(b"250"):
                        return reply, time.monotonic() - t0
                    time.sleep(0.1)
                return b"", time.monotonic() - t0

        reply, took = await asyncio.to_thread(run)
        assert reply.startswith(b"421 4.4.2 Session time limit"), reply
        assert 0.9 <= took <= 2.0, took


async def test_idle_timeout_says_421(tmp_path: Path) -> None:
    async with listener(tmp_path, idle_timeout=0.3) as lst:

        def run() -> bytes:
            with connect(lst, "127.0.14.1") as s:
                f = s.makefile("rb")
                read_reply(f)
                return f.readline()

        assert (await asyncio.to_thread(run)).startswith(b"421 4.4.2 Idle timeout")


# --------------------------------------------------------------------------- IDN


@pytest.mark.parametrize("written", ["bücher.example", "xn--bcher-kva.example", "Bücher.Example."])
async def test_idn_domain_in_either_form_matches_rcpt_in_either_form(
    tmp_path: Path, written: str
) -> None:
    path = tmp_path / "mailgate.toml"
    path.write_text(
        f'[[domains]]\nname = "{written}"\nmailboxes = ["support"]\n[api]\nenabled = false\n',
        encoding="utf-8",
    )
    cfg = load_config(path)
    assert [d.name for d in cfg.domains] == ["xn--bcher-kva.example"]
    commands = [
        b"EHLO c.test",
        b"MAIL FROM:<a@example.org> SMTPUTF8",
        "RCPT TO:<support@bücher.example>".encode(),
        b"RCPT TO:<support@xn--bcher-kva.example>",
        "RCPT TO:<support@BÜCHER.example>".encode(),
        b"RCPT TO:<support@bucher.example>",
        "RCPT TO:<nobody@bücher.example>".encode(),
    ]
    async with listener(tmp_path, domains=cfg.domains) as lst:
        got = await asyncio.to_thread(dialogue, lst, commands)
    codes = [r[:9] for r in got[3:]]
    assert codes == [b"250 2.1.5", b"250 2.1.5", b"250 2.1.5", b"554 5.7.1", b"550 5.1.1"], got


def test_config_refuses_an_invalid_idn_in_the_usual_style(tmp_path: Path) -> None:
    path = tmp_path / "mailgate.toml"
    path.write_text(
        '[[domains]]\nname = "xn--zz.example"\nmailboxes = ["support"]\n'
        '[[domains]]\nname = "bücher.example"\nmailboxes = ["support"]\n'
        '[[domains]]\nname = "xn--bcher-kva.example"\nmailboxes = ["support"]\n'
        "[api]\nenabled = false\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert "domains[0].name = 'xn--zz.example': expected a domain name like" in text
    assert "domains[2].name = 'xn--bcher-kva.example': expected each domain once" in text


def test_networks_are_slash_24_and_slash_64() -> None:
    assert network_of("192.0.2.77") == "192.0.2.0/24"
    assert network_of("::ffff:192.0.2.77") == "192.0.2.0/24"  # a dual-stack listener
    assert network_of("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert network_of("2001:db8:1:3::1") != network_of("2001:db8:1:2::1")
