"""clamd's ``zINSTREAM`` protocol over TCP or a Unix socket (clamd(8), "INSTREAM").

The raw message goes to clamd as it arrived: clamd decodes MIME, archives and TNEF itself, so
mailgate does not re-implement any of that. One connection per scan: clamd serves each
connection on its own thread, a loopback connect costs less than 100 us, and a fresh connection
cannot be left half-read by a cancelled scan.

Answers: ``stream: OK`` (clean), ``stream: <signature> FOUND``, and ``... ERROR`` lines. A
message over clamd's ``StreamMaxLength`` is answered ``INSTREAM size limit exceeded. ERROR``
(often while we are still sending): that is a `ScanError` of kind ``too-large``, never clean.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct

from mailgate.config import AntivirusConfig, parse_hostport
from mailgate.scanners.base import ScanError, Timer, VirusVerdict

ENGINE = "clamav"
CHUNK = 64 * 1024
MAX_REPLY = 4096
_TOO_LARGE = "INSTREAM size limit exceeded"


class ClamdClient:
    """Scans byte strings with one clamd; see the module docstring."""

    def __init__(self, cfg: AntivirusConfig) -> None:
        self.cfg = cfg
        self.timeout = cfg.timeout
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

    async def _command(self, command: bytes, payload: bytes | None) -> str:
        reader, writer = await self._connect()
        try:
            sent_all = True
            try:
                writer.write(b"z" + command + b"\0")
                if payload is not None:
                    view = memoryview(payload)
                    for start in range(0, len(view), CHUNK):
                        chunk = view[start : start + CHUNK]
                        writer.write(struct.pack(">I", len(chunk)))
                        writer.write(chunk)
                        await writer.drain()
                    writer.write(struct.pack(">I", 0))
                await writer.drain()
            except OSError:
                # clamd closes the stream early when StreamMaxLength is exceeded; its reason
                # is still waiting in our receive buffer.
                sent_all = False
            try:
                reply = await reader.readuntil(b"\0")
            except asyncio.IncompleteReadError as exc:
                reply = exc.partial
            except asyncio.LimitOverrunError:
                raise ScanError(ENGINE, "protocol", "reply too long") from None
            except OSError as exc:
                raise ScanError(ENGINE, "unavailable", f"connection lost: {exc}") from None
            text = reply.rstrip(b"\0").decode("utf-8", "replace").strip()
            if not text:
                raise ScanError(
                    ENGINE, "unavailable", "clamd closed the connection without an answer"
                )
            if not sent_all and _TOO_LARGE not in text:
                raise ScanError(ENGINE, "unavailable", f"clamd stopped reading: {text[:200]}")
            return text
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def scan(self, data: bytes) -> VirusVerdict:
        """Scan ``data`` (a whole message or one attachment) under ``timeout``."""
        timer = Timer(ENGINE)
        try:
            async with asyncio.timeout(self.timeout):
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
