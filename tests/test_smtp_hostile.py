"""The SMTP front end against a hostile client: real sockets on 127.0.0.1, a real SQLite store.

Protocol laxity (early talkers, STARTTLS, AUTH, HELP, EHLO keywords, SIZE), connection economics
(per-network caps, DATA deadline, minimum rate, session deadline), IDN recipients, and
``SmtpServer.reload``. Distinct client addresses come from binding 127.N.M.1 (all of 127/8 is
loopback on Linux). Every timing here is a short test config, so each test takes seconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import smtplib
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailgate.config import DomainConfig, SmtpConfig
from mailgate.smtp.handler import SmtpHandler
from mailgate.smtp.policy import RecipientPolicy
from mailgate.smtp.server import SmtpServer, StartupError
from mailgate.store.sqlite import SqliteStore

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
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
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
