"""A real SMTP sink on 127.0.0.1 (aiosmtpd) that records what it receives: the test smarthost.

It runs its own event loop in a background thread, so it works both under async tests and
while sync code blocks (a ``MailgateServer`` subprocess sending to it). It can go down and come
back on the same port (``stop()`` / ``start()``), answer chosen codes to RCPT or DATA, offer
STARTTLS or implicit TLS, and require a login::

    with SmtpSink() as sink:                  # or the ``smtp_sink`` fixture
        cfg = ReplyConfig(smarthost=sink.address)
        ...
        msgs = sink.wait_for(1)               # SinkMessage(mail_from, rcpt_tos, data, ...)
        sink.stop(); ...; sink.start()        # down for a while, back on the same port
        sink.rcpt_reply = "550 5.1.1 no such user"

Every sink started through the fixture is stopped when the test ends, also on failure.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = ["SinkMessage", "SmtpSink", "smtp_sink"]


@dataclass
class SinkMessage:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    mail_options: list[str] = field(default_factory=list)
    tls: bool = False
    login: str | None = None
    helo: str | None = None


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        envelope.mail_from = address  # "<>" for the null reverse-path (aiosmtpd needs it truthy)
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.sink.rcpt_reply:
            return self.sink.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.sink.data_reply:
            return self.sink.data_reply
        content = envelope.original_content or envelope.content or b""
        data = content if isinstance(content, bytes) else content.encode()
        auth = session.auth_data
        login = auth.login.decode() if isinstance(auth, LoginPassword) else None
        msg = SinkMessage(
            mail_from="" if envelope.mail_from in (None, "<>") else envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            data=data,
            mail_options=list(envelope.mail_options),
            tls=session.ssl is not None
            or (
                server.transport is not None
                and server.transport.get_extra_info("ssl_object") is not None
            ),
            login=login,
            helo=session.host_name,
        )
        with self.sink._lock:
            self.sink.messages.append(msg)
        return "250 2.0.0 queued"


class SmtpSink:
    """See the module docstring."""

    def __init__(
        self,
        *,
        tls: str = "none",
        tls_context: ssl.SSLContext | None = None,
        credentials: tuple[str, str] | None = None,
        port: int = 0,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port
        self.tls = tls  # "none" | "starttls" | "tls"
        self.tls_context = tls_context
        self.credentials = credentials
        self.messages: list[SinkMessage] = []
        self.rcpt_reply: str | None = None
        self.data_reply: str | None = None
        self.smtputf8 = True  # False: EHLO does not advertise SMTPUTF8
        self.connections = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # ------------------------------------------------------------------ lifecycle

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._thread = threading.Thread(target=loop.run_forever, daemon=True, name="smtp-sink")
            self._thread.start()
        return self._loop

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if (
            self.credentials is not None
            and isinstance(data, LoginPassword)
            and (data.login.decode(), data.password.decode()) == self.credentials
        ):
            return AuthResult(success=True, auth_data=data)
        return AuthResult(success=False, handled=False)

    def _factory(self) -> SMTP:
        self.connections += 1
        kwargs: dict[str, Any] = {
            "hostname": "sink.test",
            "enable_SMTPUTF8": self.smtputf8,
            "decode_data": False,
            "timeout": 30,
        }
        if self.tls == "starttls":
            kwargs.update(tls_context=self.tls_context, require_starttls=True)
        if self.credentials is not None:
            # Implicit TLS: aiosmtpd does not see the TLS layer, so it could only require AUTH
            # "without TLS", which it warns about; there AUTH is offered, and the test checks
            # that the client logged in.
            implicit = self.tls == "tls"
            kwargs.update(
                authenticator=self._authenticate,
                auth_required=not implicit,
                auth_require_tls=self.tls == "starttls",
            )
        return SMTP(_Handler(self), **kwargs)

    async def _open(self) -> int:
        loop = asyncio.get_running_loop()
        ssl_ctx = self.tls_context if self.tls == "tls" else None
        server = await loop.create_server(
            self._factory, self.host, self.port, ssl=ssl_ctx, reuse_address=True
        )
        self._server = server
        return int(server.sockets[0].getsockname()[1])

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            # aiosmtpd sessions would keep the port busy; close them so "down" means down
            await self._server.wait_closed()
            self._server = None

    def start(self) -> SmtpSink:
        """Listen (again, on the same port once one was chosen)."""
        loop = self._ensure_loop()
        self.port = asyncio.run_coroutine_threadsafe(self._open(), loop).result(10)
        return self

    def stop(self) -> None:
        """Stop listening: connections are refused until `start` (the loop keeps running)."""
        if self._loop is not None and self._server is not None:
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)

    def close(self) -> None:
        """Stop for good: listener, loop and thread."""
        self.stop()
        if self._loop is not None:
            loop = self._loop
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(10)
            loop.close()
            self._loop = None
            self._thread = None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ waiting

    def received(self) -> list[SinkMessage]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, expected: int, timeout: float = 15.0) -> list[SinkMessage]:
        """Block until at least ``expected`` messages arrived (AssertionError after timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.received()
            if len(got) >= expected:
                return got
            time.sleep(0.02)
        raise AssertionError(f"sink got {len(self.received())} of {expected} messages")

    async def wait_for_async(self, expected: int, timeout: float = 15.0) -> list[SinkMessage]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.received()
            if len(got) >= expected:
                return got
            await asyncio.sleep(0.02)
        raise AssertionError(f"sink got {len(self.received())} of {expected} messages")


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A started plain sink; closed at the end of the test."""
    sink = SmtpSink()
    try:
        yield sink.start()
    finally:
        sink.close()
