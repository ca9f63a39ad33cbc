"""The SMTP outbox worker against a real SMTP sink, real TLS and a real DNS server for DKIM."""

from __future__ import annotations

import asyncio
import email
import email.policy
import ipaddress
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import dkim
import dns.resolver
import pytest
from cryptography import x509

from mailgate.auth.checker import AuthChecker
from mailgate.config import AuthConfig
from mailgate.delivery.smtp_out import ReplySender
from tests.support.dkim_keys import ed25519_key, rsa_key
from tests.support.dns_server import DnsTestServer, dns_server
from tests.support.reply_harness import ReplyHarness, message
from tests.support.smtp_sink import SmtpSink, smtp_sink
from tests.support.tls import write_self_signed

__all__ = ["dns_server", "smtp_sink"]

RETURN_PATH = "alice.return@example.org"


def dnsfunc_for(server: DnsTestServer):  # type: ignore[no-untyped-def]
    """dkimpy's dnsfunc answering from the test DNS server (never the system resolver)."""
    host, port = server.address.rsplit(":", 1)
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.port = int(port)

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        answer = resolver.resolve(name.decode().rstrip("."), "TXT", lifetime=timeout)
        return b"".join(b"".join(rr.strings) for rr in answer)

    return dnsfunc


async def wait_until(predicate, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


async def test_reply_arrives_signed_threaded_and_dkim_verifies(
    tmp_path: Path,
    smtp_sink: SmtpSink,
    dns_server: DnsTestServer,
) -> None:
    key = rsa_key()
    key.publish(dns_server, "mg1", "example.test")
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(key.private)
    async with ReplyHarness(
        tmp_path,
        smarthost=smtp_sink.address,
        dkim_domain="example.test",
        dkim_selector="mg1",
        dkim_key_file=str(key_file),
    ) as h:
        env = await h.deliver(
            message("Where is my parcel?", message_id="<p1@mail.example.org>"),
            mail_from=RETURN_PATH,
        )
        sender = ReplySender(h.store, h.cfg.reply)
        assert await sender.run_once() == 1
        [got] = smtp_sink.wait_for(1)
        rows = await h.outbox()
        checker = AuthChecker(AuthConfig(nameservers=[dns_server.address]), "mx.test")
        try:
            report = await checker.check_message(
                got.data, client_ip="127.0.0.1", helo="mx.test", mail_from="", spf=None
            )
        finally:
            await checker.close()
    ticket = env["thread"]["ticket"]
    assert got.mail_from == ""  # MAIL FROM:<>
    assert got.rcpt_tos == [RETURN_PATH]
    assert got.helo == "example.test"
    assert rows[0].state == "sent" and rows[0].attempts == 1 and rows[0].last_code == 250
    assert dkim.verify(got.data, dnsfunc=dnsfunc_for(dns_server))
    assert report.dkim.result == "pass" and report.dkim.domain == "example.test"
    msg = email.message_from_bytes(got.data, policy=email.policy.default)
    assert msg["Subject"] == f"Re: Where is my parcel? [Ticket {ticket}]"
    assert msg["In-Reply-To"] == "<p1@mail.example.org>"
    assert msg["References"] == "<p1@mail.example.org>"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["Reply-To"].addresses[0].addr_spec == f"support+{ticket}@example.test"
    signature = msg["DKIM-Signature"]
    assert "d=example.test" in signature and "s=mg1" in signature
    for signed in ("from", "subject", "in-reply-to", "references", "reply-to", "auto-submitted"):
        assert signed in signature.lower()


async def test_ed25519_seed_key_signs_and_verifies(
    tmp_path: Path,
    smtp_sink: SmtpSink,
    dns_server: DnsTestServer,
) -> None:
    key = ed25519_key()
    key.publish(dns_server, "ed", "example.test")
    key_file = tmp_path / "dkim.key"
    key_file.write_bytes(key.private)
    async with ReplyHarness(
        tmp_path,
        smarthost=smtp_sink.address,
        dkim_domain="example.test",
        dkim_selector="ed",
        dkim_key_file=str(key_file),
    ) as h:
        await h.deliver(message(), mail_from=RETURN_PATH)
        await ReplySender(h.store, h.cfg.reply).run_once()
    [got] = smtp_sink.wait_for(1)
    assert b"a=ed25519-sha256" in got.data
    assert dkim.verify(got.data, dnsfunc=dnsfunc_for(dns_server))


async def test_smarthost_down_then_up_nothing_lost(
    tmp_path: Path,
    smtp_sink: SmtpSink,
) -> None:
    async with ReplyHarness(
        tmp_path, smarthost=smtp_sink.address, retry_schedule="0s, 50ms*1000", timeout=5
    ) as h:
        smtp_sink.stop()
        sender = ReplySender(h.store, h.cfg.reply, poll_interval=0.05)
        await sender.start()
        try:
            for i in range(5):
                await h.deliver(message(f"Question {i}"), mail_from=f"user{i}@example.org")

            async def all_failed_once() -> bool:
                rows = await h.outbox()
                return len(rows) == 5 and all(r.attempts >= 1 for r in rows)

            await wait_until(all_failed_once)
            rows = await h.outbox()
            assert {r.state for r in rows} == {"pending"}
            assert all(r.last_error and "smarthost" in r.last_error for r in rows)
            assert smtp_sink.received() == []
            smtp_sink.start()  # back, on the same port

            async def all_sent() -> bool:
                return {r.state for r in await h.outbox()} == {"sent"}

            await wait_until(all_sent)
        finally:
            await sender.stop()
    got = smtp_sink.received()
    assert sorted(m.rcpt_tos[0] for m in got) == [f"user{i}@example.org" for i in range(5)]
    detail = await _detail(tmp_path, rows[0].id)
    assert detail[-1]["outcome"] == "sent"
    assert all(a["outcome"] == "retry" for a in detail[:-1])


async def _detail(tmp_path: Path, reply_id: str) -> list[dict[str, object]]:
    async with ReplyHarness(tmp_path) as h:
        return (await h.store.get_reply(reply_id)).history


async def test_permanent_failure_goes_to_the_dlq_and_can_be_retried(
    tmp_path: Path,
    smtp_sink: SmtpSink,
) -> None:
    async with ReplyHarness(tmp_path, smarthost=smtp_sink.address) as h:
        await h.deliver(message(), mail_from=RETURN_PATH)
        smtp_sink.rcpt_reply = "550 5.1.1 no such user"
        sender = ReplySender(h.store, h.cfg.reply)
        await sender.run_once()
        [row] = await h.outbox()
        assert row.state == "dead" and row.last_code == 550
        assert "no such user" in (row.last_error or "")
        assert await sender.run_once() == 0  # dead rows are not claimed
        smtp_sink.rcpt_reply = None
        assert await h.store.retry_replies([row.id]) == 1
        await sender.run_once()
        [row] = await h.outbox()
        assert row.state == "sent"
    assert len(smtp_sink.wait_for(1)) == 1


async def test_temporary_failure_is_retried(tmp_path: Path, smtp_sink: SmtpSink) -> None:
    async with ReplyHarness(
        tmp_path, smarthost=smtp_sink.address, retry_schedule="0s, 0s, 0s"
    ) as h:
        await h.deliver(message(), mail_from=RETURN_PATH)
        smtp_sink.data_reply = "451 4.3.0 try again later"
        sender = ReplySender(h.store, h.cfg.reply)
        await sender.run_once()
        [row] = await h.outbox()
        assert (row.state, row.last_code) == ("pending", 451)
        smtp_sink.data_reply = None
        await sender.run_once()
        [row] = await h.outbox()
        assert (row.state, row.attempts) == ("sent", 2)


async def test_spent_retries_go_to_the_dlq(tmp_path: Path, smtp_sink: SmtpSink) -> None:
    async with ReplyHarness(tmp_path, smarthost=smtp_sink.address, retry_schedule="0s, 0s") as h:
        await h.deliver(message(), mail_from=RETURN_PATH)
        smtp_sink.stop()
        sender = ReplySender(h.store, h.cfg.reply)
        await sender.run_once()
        await sender.run_once()
        [row] = await h.outbox()
        assert row.state == "dead" and row.attempts == 2
        assert (row.last_error or "").startswith("retries spent")


# ---------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A self-signed certificate for 127.0.0.1 (the test's CA file) and its key."""
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    write_self_signed(
        cert_file,
        key_file,
        "127.0.0.1",
        san=x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ca=True,
    )
    yield cert_file, key_file


def server_context(tls_files: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(tls_files[0]), str(tls_files[1]))
    return ctx


@pytest.mark.parametrize("mode", ["starttls", "tls"])
async def test_tls_and_login_to_the_smarthost(
    tmp_path: Path, tls_files: tuple[Path, Path], mode: str
) -> None:
    with SmtpSink(
        tls=mode, tls_context=server_context(tls_files), credentials=("mailgate", "s3cret")
    ) as sink:
        async with ReplyHarness(
            tmp_path,
            smarthost=sink.address,
            smarthost_tls=mode,
            smarthost_ca_file=str(tls_files[0]),
            smarthost_username="mailgate",
            smarthost_password="s3cret",
        ) as h:
            await h.deliver(message(), mail_from=RETURN_PATH)
            await ReplySender(h.store, h.cfg.reply).run_once()
            [row] = await h.outbox()
            assert row.state == "sent", row.last_error
        [got] = sink.wait_for(1)
    assert got.tls is True
    assert got.login == "mailgate"


async def test_wrong_password_waits_instead_of_dead_lettering(
    tmp_path: Path, tls_files: tuple[Path, Path]
) -> None:
    with SmtpSink(
        tls="starttls", tls_context=server_context(tls_files), credentials=("mailgate", "right")
    ) as sink:
        async with ReplyHarness(
            tmp_path,
            smarthost=sink.address,
            smarthost_tls="starttls",
            smarthost_ca_file=str(tls_files[0]),
            smarthost_username="mailgate",
            smarthost_password="wrong",
        ) as h:
            await h.deliver(message(), mail_from=RETURN_PATH)
            await ReplySender(h.store, h.cfg.reply).run_once()
            [row] = await h.outbox()
        assert row.state == "pending" and row.attempts == 1
        assert row.last_code == 535
        assert sink.received() == []


async def test_untrusted_certificate_is_not_accepted(
    tmp_path: Path, tls_files: tuple[Path, Path]
) -> None:
    with SmtpSink(tls="starttls", tls_context=server_context(tls_files)) as sink:
        async with ReplyHarness(tmp_path, smarthost=sink.address, smarthost_tls="starttls") as h:
            await h.deliver(message(), mail_from=RETURN_PATH)
            await ReplySender(h.store, h.cfg.reply).run_once()
            [row] = await h.outbox()
        assert row.state == "pending"
        assert "certificate" in (row.last_error or "").lower()
        assert sink.received() == []
