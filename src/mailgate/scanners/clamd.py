"""clamd's ``zINSTREAM`` protocol over TCP or a Unix socket (clamd(8), "INSTREAM", "IDSESSION").

The raw message goes to clamd as it arrived, once and whole: clamd decodes MIME, archives and
TNEF itself, so mailgate does not re-implement any of that.

Two ways to talk. Without a pool (``sessions=0``: ``mailgate scan``, ``/readyz``), one
connection per command, nothing to close. With one (the antivirus stage, the DATA gate), scans
go over long-lived ``zIDSESSION`` connections, one scan at a time on each: a connect, two
asyncio transports and a close per message were most of mailgate's CPU for a scan. In a session
clamd numbers its replies (``<n>: stream: OK``), and a reply with another number is a protocol
error, never a verdict. A session clamd closed while it sat idle (its ``IdleTimeout``, a
restart) is noticed when the next scan gets no answer on it; that scan is sent again, whole, on
a new connection, once. Any error closes the session it happened on.

Answers: ``stream: OK`` (clean), ``stream: <signature> FOUND``, and ``... ERROR`` lines. A
message over clamd's ``StreamMaxLength`` is answered ``INSTREAM size limit exceeded. ERROR``
(often while we are still sending): that is a `ScanError` of kind ``too-large``, never clean.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time

from mailgate.config import AntivirusConfig, parse_hostport
from mailgate.scanners.base import ScanError, Timer, VirusVerdict

ENGINE = "clamav"
CHUNK = 64 * 1024
MAX_REPLY = 4096
SESSIONS = 16
"""Idle sessions kept per client (the stage runs at most 16 scans at a time)."""
IDLE_MAX = 20.0
"""Seconds an idle session is reused; clamd's default ``IdleTimeout`` is 30 s."""
_TOO_LARGE = "INSTREAM size limit exceeded"
_END = struct.pack(">I", 0)


class _Lost(Exception):
    """A reused session was closed by clamd before it answered: send again on a new one."""


class _Session:
    """One ``zIDSESSION`` connection; ``n`` is the number of the next command's reply."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.n = 1
        self.used = time.monotonic()

    def fresh(self, now: float) -> bool:
        return (
            now - self.used < IDLE_MAX and not self.reader.at_eof() and not self.writer.is_closing()
        )

    def close(self, end: bool = True) -> None:
        """``end``: say goodbye (``zEND``) on a session that is between commands."""
        with contextlib.suppress(Exception):
            if end and not self.writer.is_closing():
                self.writer.write(b"zEND\0")
            self.writer.close()


class ClamdClient:
    """Scans byte strings with one clamd; see the module docstring."""

    def __init__(self, cfg: AntivirusConfig, sessions: int = 0) -> None:
        self.cfg = cfg
        self.timeout = cfg.timeout
        self.sessions = sessions
        self._idle: list[_Session] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        if cfg.address.startswith("unix:"):
            self.path: str | None = cfg.address[len("unix:") :]
            self.host, self.port = "", 0
        else:
            self.path = None
            self.host, self.port = parse_hostport(cfg.address)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            if self.path is not None:
                return await asyncio.open_unix_connection(self.path)
            return await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            raise ScanError(ENGINE, "unavailable", f"cannot connect to clamd: {exc}") from None

    @staticmethod
    def _send(writer: asyncio.StreamWriter, command: bytes, payload: bytes | None) -> None:
        """Queue one command (and the payload as INSTREAM chunks) without copying the payload
        more than the kernel makes us (a small message goes out in one write)."""
        if payload is None:
            writer.write(command)
            return
        if len(payload) <= CHUNK:
            writer.write(b"".join((command, struct.pack(">I", len(payload)), payload, _END)))
            return
        writer.write(command)
        view = memoryview(payload)
        for start in range(0, len(view), CHUNK):
            chunk = view[start : start + CHUNK]
            writer.write(struct.pack(">I", len(chunk)))
            writer.write(chunk)
        writer.write(_END)

    @staticmethod
    async def _reply(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sent: bool
    ) -> bytes:
        """clamd's NUL-terminated answer (what it managed to say, if it closed early).

        Past StreamMaxLength clamd answers and closes with our chunks unread, so a send fails
        with a reset, and asyncio then closes the socket without reading what arrived: the
        answer sat unread in the kernel (under load, a third of such scans came back
        "unavailable" instead of "too-large"). So the answer is awaited while the payload
        goes out (a read started after the reset raises it even with the answer buffered),
        and a duplicate of the socket's descriptor (`_spare`) reads what is left after it."""
        spare = _spare(writer) if sent else None
        reading = asyncio.ensure_future(reader.readuntil(b"\0"))
        try:
            if sent:
                try:
                    await writer.drain()
                except OSError:
                    sent = False  # clamd stopped reading; its reason is on the way
            reply = await reading
        except asyncio.IncompleteReadError as exc:
            reply = exc.partial
        except asyncio.LimitOverrunError:
            raise ScanError(ENGINE, "protocol", "reply too long") from None
        except OSError as exc:
            if not sent:
                reply = _salvage(spare)
            else:
                raise ScanError(ENGINE, "unavailable", f"connection lost: {exc}") from None
        finally:
            if not reading.done():
                reading.cancel()
            elif not reading.cancelled():
                reading.exception()  # retrieved: no "never retrieved" warning
            if spare is not None:
                spare.close()
        if not sent and _TOO_LARGE.encode() not in reply:
            text = reply.rstrip(b"\0").decode("utf-8", "replace").strip()
            raise ScanError(ENGINE, "unavailable", f"clamd stopped reading: {text[:200]}")
        return reply

    async def _command(self, command: bytes, payload: bytes | None) -> str:
        """One command on a connection of its own."""
        reader, writer = await self._connect()
        try:
            self._send(writer, b"z" + command + b"\0", payload)
            text = _text(await self._reply(reader, writer, True))
            if not text:
                raise ScanError(
                    ENGINE, "unavailable", "clamd closed the connection without an answer"
                )
            return text
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # ------------------------------------------------------------------ sessions

    def _take(self) -> _Session | None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a client carried over to another event loop
            self._drop_idle()
            self._loop = loop
        now = time.monotonic()
        while self._idle:
            session = self._idle.pop()
            if session.fresh(now):
                return session
            session.close()
        return None

    async def _open(self) -> _Session:
        reader, writer = await self._connect()
        writer.write(b"zIDSESSION\0")
        return _Session(reader, writer)

    async def _in_session(self, payload: bytes) -> str:
        session = self._take()
        if session is not None:
            try:
                return await self._session_scan(session, payload, reused=True)
            except _Lost:
                pass
        session = await self._open()
        try:
            return await self._session_scan(session, payload, reused=False)
        except _Lost:
            raise ScanError(
                ENGINE, "unavailable", "clamd closed the connection without an answer"
            ) from None

    async def _session_scan(self, session: _Session, payload: bytes, *, reused: bool) -> str:
        ok = False
        try:
            self._send(session.writer, b"zINSTREAM\0", payload)
            try:
                reply = await self._reply(session.reader, session.writer, True)
            except ScanError as exc:
                if reused and exc.kind == "unavailable":
                    raise _Lost from None
                raise
            if not reply:
                if reused:
                    raise _Lost
                raise ScanError(
                    ENGINE, "unavailable", "clamd closed the connection without an answer"
                )
            prefix = f"{session.n}: ".encode()
            if not reply.startswith(prefix):
                raise ScanError(ENGINE, "protocol", f"unexpected answer {_text(reply)[:200]!r}")
            text = _text(reply[len(prefix) :])
            session.n += 1
            # an error answer may leave the session in any state: do not reuse it
            ok = reply.endswith(b"\0") and not text.endswith(" ERROR")
            return text
        finally:
            if ok and len(self._idle) < self.sessions:
                session.used = time.monotonic()
                self._idle.append(session)
            else:
                session.close(end=ok)

    def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for session in idle:
            session.close()

    async def close(self) -> None:
        """End the idle sessions (``zEND``); a scan after this opens new ones."""
        if self._loop is not None and self._loop is not asyncio.get_running_loop():
            self._idle = []
            return
        idle, self._idle = self._idle, []
        for session in idle:
            session.close()
        for session in idle:
            with contextlib.suppress(Exception):
                await session.writer.wait_closed()

    # ------------------------------------------------------------------ the API

    async def scan(self, data: bytes) -> VirusVerdict:
        """Scan ``data`` (a whole message or one attachment) under ``timeout``."""
        timer = Timer(ENGINE)
        try:
            async with asyncio.timeout(self.timeout):
                if self.sessions > 0:
                    text = await self._in_session(data)
                else:
                    text = await self._command(b"INSTREAM", data)
        except TimeoutError:
            timer.done("error")
            raise ScanError(ENGINE, "timeout", f"no answer within {self.timeout}s") from None
        except ScanError as exc:
            timer.done("too-large" if exc.kind == "too-large" else "error")
            raise
        try:
            verdict = parse_reply(text)
        except ScanError as exc:
            timer.done("too-large" if exc.kind == "too-large" else "error")
            raise
        outcome = "clean" if verdict.clean else "virus"
        return VirusVerdict(verdict.signature, timer.done(outcome))

    async def ping(self) -> bool:
        """clamd answers ``PONG`` (used by ``/readyz``; no metrics)."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._command(b"PING", None) == "PONG"
        except (TimeoutError, ScanError):
            return False

    async def version(self) -> str:
        async with asyncio.timeout(self.timeout):
            return await self._command(b"VERSION", None)


def _spare(writer: asyncio.StreamWriter) -> socket.socket | None:
    """A second descriptor of the connection's socket: it outlives asyncio closing its own."""
    sock = writer.get_extra_info("socket")
    try:
        return sock.dup() if sock is not None else None
    except OSError:
        return None


def _salvage(spare: socket.socket | None) -> bytes:
    """What clamd said before it reset the connection, still queued in the kernel (a reset
    does not discard received data); b"" when nothing is there."""
    if spare is None:
        return b""
    spare.setblocking(False)
    got = b""
    with contextlib.suppress(OSError):
        while len(got) < MAX_REPLY and not got.endswith(b"\0"):
            data = spare.recv(MAX_REPLY)
            if not data:
                break
            got += data
    return got


def _text(reply: bytes) -> str:
    return reply.rstrip(b"\0").decode("utf-8", "replace").strip()


def parse_reply(text: str) -> VirusVerdict:
    """``stream: OK`` / ``stream: NAME FOUND`` / ``... ERROR`` -> verdict or `ScanError`."""
    if _TOO_LARGE in text:
        raise ScanError(ENGINE, "too-large", "message exceeds clamd's StreamMaxLength")
    if text.endswith(" ERROR"):
        raise ScanError(ENGINE, "protocol", text[:200])
    _, sep, rest = text.partition(": ")
    if not sep:
        raise ScanError(ENGINE, "protocol", f"unexpected answer {text[:200]!r}")
    if rest == "OK":
        return VirusVerdict()
    if rest.endswith(" FOUND") and len(rest) > len(" FOUND"):
        return VirusVerdict(rest[: -len(" FOUND")].strip())
    raise ScanError(ENGINE, "protocol", f"unexpected answer {text[:200]!r}")
