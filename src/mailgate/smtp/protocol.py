"""aiosmtpd's SMTP protocol with a chunked DATA reader and connection limits.

Stock aiosmtpd reads DATA line by line (~30 MB/s here), which caps large-message throughput.
``MailgateSMTP.smtp_DATA`` reads the socket in 64 KiB chunks and scans for ``CRLF.CRLF``,
then removes dot-stuffing with one ``replace``. It keeps aiosmtpd's semantics:

* only ``<CRLF>.<CRLF>`` ends DATA; a lone LF or CR around the dot is data (the SMTP
  smuggling fix of aiosmtpd 1.4.5, CVE-2024-27305);
* the terminator may span two reads; an empty body is ``.\\r\\n`` right after the 354;
* bytes after the terminator (a pipelined command) go back to the stream reader;
* size and line-length limits are enforced while reading, and the reply is sent only once
  the whole DATA has been read (RFC 5321 4.2.5), discarding the excess at once.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any
from typing import Any as _Any

import aiosmtpd.smtp as _aiosmtpd_smtp
from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session

from mailgate import metrics
from mailgate.smtp import replies
from mailgate.smtp.policy import ConnectionCounter


class _AuthMemberCache:
    """Stands in for ``inspect`` inside ``aiosmtpd.smtp``.

    aiosmtpd builds its AUTH-method table with ``inspect.getmembers(self)`` for every new
    connection, which evaluates every attribute of the protocol object: about a quarter of a
    millisecond per connection, a large share of the MX workload (one message per
    connection). The *names* of a class's members do not change, so they are looked up once
    per class and bound per instance with ``getattr`` (aiosmtpd keeps only ``auth_*`` names).
    """

    def __init__(self) -> None:
        self._names: dict[type, list[str]] = {}

    def getmembers(self, obj: _Any) -> list[tuple[str, _Any]]:
        names = self._names.get(type(obj))
        if names is None:
            names = [n for n, _ in inspect.getmembers(obj) if n.startswith("auth_")]
            self._names[type(obj)] = names
        return [(n, getattr(obj, n)) for n in names]

    def __getattr__(self, name: str) -> _Any:
        return getattr(inspect, name)


setattr(_aiosmtpd_smtp, "inspect", _AuthMemberCache())  # noqa: B010 - replace a module global

_TERMINATOR = b"\r\n.\r\n"
_READ_SIZE = 65536


class MailgateSMTP(SMTP):
    """See the module docstring. One instance per connection (aiosmtpd's model)."""

    # Set per server by ``server.py`` through a subclass factory.
    max_data_line: int = 65536
    connections: ConnectionCounter | None = None
    chunked_data: bool = True
    on_close: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._counted_ip: str | None = None

    # ------------------------------------------------------------------ connection limits

    async def _handle_client(self) -> None:
        assert self.session is not None
        metrics.SMTP_SESSIONS.inc()
        peer = self.session.peer
        ip = peer[0] if isinstance(peer, tuple) and peer else str(peer)
        if self.connections is not None and self._proxy_timeout is None:
            hit = self.connections.try_open(ip)
            if hit is not None:
                metrics.SMTP_REJECTED.labels(reason=f"connections-{hit}").inc()
                text = (
                    replies.TOO_MANY_CONNECTIONS
                    if hit == "total"
                    else replies.TOO_MANY_CONNECTIONS_IP
                )
                await self.push(text)
                if self.transport is not None:
                    self.transport.close()
                return
            self._counted_ip = ip
        metrics.SMTP_ACTIVE.inc()
        try:
            await super()._handle_client()
        finally:
            metrics.SMTP_ACTIVE.dec()

    def connection_lost(self, error: Exception | None) -> None:
        if self._counted_ip is not None and self.connections is not None:
            self.connections.close(self._counted_ip)
            self._counted_ip = None
        super().connection_lost(error)

    # ------------------------------------------------------------------ chunked DATA

    async def smtp_DATA(self, arg: str) -> None:
        if not self.chunked_data:
            await super().smtp_DATA(arg)
            return
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        content = await self._read_data()
        if content is None:
            return  # connection closed mid-DATA
        if isinstance(content, str):
            await self.push(content)
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            return
        self.envelope.content = content
        self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if status is MISSING else status)

    async def _read_data(self) -> bytes | str | None:
        """The unstuffed message, an error reply to send, or None if the peer went away."""
        reader = self._reader
        # A virtual CRLF before the first line lets one search find ".\r\n" as the empty body
        # and a leading "..", and makes every line start right after a CRLF.
        buf = bytearray(b"\r\n")
        limit = self.data_size_limit
        max_line = self.max_data_line
        error: str | None = None
        partial = 0  # length of the current, not yet terminated line
        while True:
            try:
                chunk = await reader.read(_READ_SIZE)
            except asyncio.CancelledError:
                if self._writer is not None:
                    self._writer.close()
                raise
            if not chunk:
                return None
            self._reset_timeout()
            search_from = max(0, len(buf) - 4)
            buf += chunk
            end = buf.find(_TERMINATOR, search_from)
            if error is None:
                # Line lengths: only the pieces of this chunk, plus the carried-over partial line.
                pieces = chunk.split(b"\n")
                if len(pieces) == 1:
                    partial += len(chunk)
                    longest = partial
                else:
                    longest = max(partial + len(pieces[0]), max(map(len, pieces[1:-1]), default=0))
                    partial = len(pieces[-1])
                if longest > max_line and (end < 0 or _longest_line(buf, end + 2) > max_line):
                    error = replies.LINE_TOO_LONG
                elif limit and (end if end >= 0 else len(buf)) > limit:
                    error = replies.TOO_BIG
            if end >= 0:
                rest = bytes(buf[end + 5 :])
                if rest:
                    # A pipelined command after the dot: give it back to the reader.
                    reader._buffer[0:0] = rest  # type: ignore[attr-defined]
                if error is not None:
                    return error
                del buf[end + 2 :]
                if b"\r\n.." in buf:
                    return bytes(buf).replace(b"\r\n..", b"\r\n.")[2:]
                return bytes(buf[2:])
            if error is not None:
                # Keep only the tail that may hold the start of the terminator.
                del buf[: len(buf) - 4]


def _longest_line(buf: bytearray, stop: int) -> int:
    """Longest line (without its LF) in ``buf[:stop]``: the exact check once DATA has ended."""
    return max(map(len, bytes(buf[:stop]).split(b"\n")), default=0)


def peer_ip(session: Session) -> str:
    """The client's IP: from the PROXY header when behind a load balancer, else the socket."""
    proxy = getattr(session, "proxy_data", None)
    if proxy is not None and getattr(proxy, "src_addr", None):
        return str(proxy.src_addr)
    peer = session.peer
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer or "")


__all__ = ["Envelope", "MailgateSMTP", "Session", "peer_ip"]
