"""aiosmtpd's SMTP protocol with a chunked DATA reader, connection economics and strict replies.

Connection economics (issue 12; Postfix ``smtpd_timeout``/``anvil``/postscreen, Haraka
``limit``/``early_talker``), each enforced here and each cut answered with a 421 that names it:

* admission: caps in all, per IP, per network, and slots reserved for clean clients
  (``connections.ConnectionCounter``), checked before the banner;
* pregreet: an unknown client waits ``greet_delay`` for the banner; whoever talks first
  (now, or with bytes already buffered when the banner is due) gets 554 5.5.1 and is closed;
* deadlines that no trickle of bytes can reset: the whole session (``session_timeout``), the
  whole DATA phase (``data_timeout``) and, after ``min_data_rate_grace``, a minimum average DATA
  rate (``min_data_rate``); the idle timeout stays as aiosmtpd has it, now with a 421 4.4.2;
* at most ``max_data_per_network`` sessions of one network in DATA at once.

Replies: every reply but the greeting and the EHLO/HELO response carries an enhanced status
code (``replies.enhanced`` rewrites aiosmtpd's stock texts), STARTTLS inside TLS or before EHLO
is 503 5.5.1, AUTH is 502 5.5.1 and absent from HELP.

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
import time
from typing import Any
from typing import Any as _Any

import aiosmtpd.smtp as _aiosmtpd_smtp
from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session, syntax

from mailgate import metrics
from mailgate.envelope import new_id
from mailgate.logs import get_logger, log_fields, set_log_context
from mailgate.smtp import replies
from mailgate.smtp.connections import ConnectionCounter, ConnectionLimits, PeerHistory
from mailgate.smtp.paths import simple_path

log = get_logger("smtp")


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
        self._signatures: dict[tuple[type, _Any], inspect.Signature] = {}

    def signature(self, obj: _Any) -> inspect.Signature:
        """aiosmtpd reads the EHLO hook's signature for every connection: once per method."""
        func = getattr(obj, "__func__", None)
        if func is None:
            return inspect.signature(obj)
        key = (type(getattr(obj, "__self__", None)), func)
        sig = self._signatures.get(key)
        if sig is None:
            sig = self._signatures[key] = inspect.signature(obj)
        return sig

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

    # Set per server by ``server.py`` through a subclass factory: a session keeps the values of
    # the class it was created from, so a reload changes only new sessions.
    max_data_line: int = 65536
    connections: ConnectionCounter | None = None
    limits: ConnectionLimits = ConnectionLimits()
    history: PeerHistory | None = None
    chunked_data: bool = True
    greet_delay: float = 0.0
    data_timeout: float = 600.0
    min_data_rate: int = 0
    min_data_rate_grace: float = 30.0
    session_timeout: float = 1800.0
    on_close: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._counted_ip: str | None = None
        self._data_ip: str | None = None
        self._greeted = False
        self._in_helo = False
        self._cut_reason: str | None = None
        self._session_timer: asyncio.TimerHandle | None = None
        self._data_timer: asyncio.TimerHandle | None = None
        self._data_started = 0.0
        self._data_bytes = 0
        self._data_rate = False
        self._last_active = time.monotonic()
        self._held: list[str] = []  # continuation lines of the reply being pushed

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # the common shape without the header parser (paths.py); anything else as aiosmtpd has it
        simple = simple_path(arg)
        if simple is None:
            try:
                return super()._getaddr(arg)
            except IndexError:  # the stdlib parser on "<", "<a@", "<@": malformed (553 5.1.3)
                return None, None
        local, domain, rest = simple
        if self.local_part_limit and len(local) > self.local_part_limit:
            return None, None
        return f"{local}@{domain}", rest

    # ------------------------------------------------------------------ stress (connections.py)

    def _reset_timeout(self, duration: float | None = None) -> None:
        # aiosmtpd calls this for every command line and DATA chunk: the session's activity
        self._last_active = time.monotonic()
        super()._reset_timeout(duration)

    def idle_for(self, now: float) -> float:
        return 0.0 if self._data_ip is not None else now - self._last_active

    def cut_idle(self) -> None:
        if self._counted_ip is not None and self.connections is not None:
            self.connections.penalize(self._counted_ip, self.limits)
        self._cut(replies.STRESS_IDLE_TIMEOUT, "stress-idle-timeout")

    # ------------------------------------------------------------------ admission

    async def _handle_client(self) -> None:
        assert self.session is not None
        # one trace per session: every line it logs (refused RCPTs too) and the messages it
        # brings carry it (this task's own log context; see mailgate.logs)
        set_log_context(trace_id=new_id("trc")[4:])
        metrics.SMTP_SESSIONS.inc()
        self._session_timer = self.loop.call_later(
            self.session_timeout, self._cut, replies.SESSION_TIMEOUT, "session-timeout"
        )
        peer = self.session.peer
        ip = peer[0] if isinstance(peer, tuple) and peer else str(peer)
        if self.connections is not None and self._proxy_timeout is None:
            clean = self.history is not None and self.history.is_clean(ip)
            hit = self.connections.try_open(ip, self.limits, clean=clean)
            if hit is not None:
                metrics.SMTP_REJECTED.labels(reason=f"connections-{hit}").inc()
                text = {
                    "per-ip": replies.TOO_MANY_CONNECTIONS_IP,
                    "per-network": replies.TOO_MANY_CONNECTIONS_NETWORK,
                }.get(hit, replies.TOO_MANY_CONNECTIONS)
                await self.push(text)
                if self.transport is not None:
                    self.transport.close()
                return
            self._counted_ip = ip
            self.connections.live.add(self)
        metrics.SMTP_ACTIVE.inc()
        try:
            await super()._handle_client()
        finally:
            metrics.SMTP_ACTIVE.dec()

    def connection_lost(self, error: Exception | None) -> None:
        for timer in (self._session_timer, self._data_timer):
            if timer is not None:
                timer.cancel()
        self._leave_data()
        if self._counted_ip is not None and self.connections is not None:
            self.connections.live.discard(self)
            self.connections.close(self._counted_ip)
            self._counted_ip = None
        super().connection_lost(error)

    async def _greet(self) -> bool:
        """The pregreet test, just before the banner; False: an early talker, refused."""
        assert self.session is not None
        ip = peer_ip(self.session)
        delay = self.greet_delay
        if delay > 0 and self.history is not None and self.history.skips_greet_delay(ip):
            delay = 0.0
        if delay > 0:
            await asyncio.sleep(delay)
        if self._reader._buffer:  # type: ignore[attr-defined]
            metrics.SMTP_REJECTED.labels(reason="early-talker").inc()
            log.info(
                "early talker refused",
                extra=log_fields(fields={"client_ip": ip, "waited": delay}),
            )
            self._reader._buffer.clear()  # type: ignore[attr-defined]
            self._cut(replies.EARLY_TALKER, None)
            return False
        if delay > 0 and self.history is not None:
            self.history.passed_greeting(ip)
        return True

    # ------------------------------------------------------------------ deadlines

    def _cut(self, reply: str, reason: str | None) -> None:
        """Send ``reply`` and close now (the handler task is cancelled by connection_lost)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if reason is not None:
            self._cut_reason = reason
            metrics.SMTP_REJECTED.labels(reason=reason).inc()
            ip = peer_ip(self.session) if self.session is not None else ""
            log.info("session cut", extra=log_fields(fields={"reason": reason, "client_ip": ip}))
        try:
            transport.write(reply.encode() + b"\r\n")  # type: ignore[attr-defined]
        except (OSError, RuntimeError, AttributeError):
            pass
        transport.close()

    def _timeout_cb(self) -> None:
        # aiosmtpd closes an idle session without a word; say why (Postfix: 421 4.4.2).
        self._cut(replies.IDLE_TIMEOUT, "idle-timeout")

    def _start_data_clock(self, *, rate: bool) -> None:
        self._data_started = self.loop.time()
        self._data_bytes = 0
        self._data_rate = rate and self.min_data_rate > 0
        self._data_timer = self.loop.call_at(self._next_data_check(), self._check_data)

    def _stop_data_clock(self) -> None:
        if self._data_timer is not None:
            self._data_timer.cancel()
            self._data_timer = None

    def _next_data_check(self) -> float:
        """The earliest time the DATA deadline or the minimum rate could be broken.

        Checked by one timer re-armed only when it fires, so the per-chunk cost is a counter.
        """
        start = self._data_started
        at = start + self.data_timeout
        if self._data_rate:
            at = min(
                at, start + max(self.min_data_rate_grace, self._data_bytes / self.min_data_rate)
            )
        return max(at, self.loop.time() + 0.01)

    def _check_data(self) -> None:
        self._data_timer = None
        elapsed = self.loop.time() - self._data_started
        if elapsed >= self.data_timeout - 0.005:
            self._cut(replies.DATA_TIMEOUT, "data-timeout")
        elif (
            self._data_rate
            and elapsed >= self.min_data_rate_grace
            and self._data_bytes < self.min_data_rate * elapsed
        ):
            self._cut(replies.DATA_TOO_SLOW, "data-too-slow")
        else:
            self._data_timer = self.loop.call_at(self._next_data_check(), self._check_data)

    def _leave_data(self) -> None:
        self._stop_data_clock()
        if self._data_ip is not None and self.connections is not None:
            self.connections.leave_data(self._data_ip)
            self._data_ip = None

    async def _enter_data(self) -> bool:
        """Take a DATA slot of the client's network; False: refused and closed."""
        assert self.session is not None
        if self.connections is None:
            return True
        ip = peer_ip(self.session)
        if not self.connections.try_enter_data(ip, self.limits):
            self._cut(replies.TOO_MANY_TRANSFERS_NETWORK, "data-per-network")
            return False
        self._data_ip = ip
        return True

    # ------------------------------------------------------------------ replies

    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            if not self._greeted and status.startswith("220 "):
                self._greeted = True
                if not await self._greet():
                    return
            elif not self._in_helo:
                status = replies.enhanced(status)
            if status[3:4] == "-" and status[:3].isdigit():
                # a continuation line (EHLO's keywords) leaves with its reply's last line: one
                # write and one send instead of one per line (~20 us each on loopback)
                self._held.append(status)
                return
            if self._held:
                status = "\r\n".join([*self._held, status])
                self._held.clear()
        await super().push(status)

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd would answer "500 Error: (Type) text": a permanent code and our internals.
        log.exception(
            "smtp session error", extra=log_fields(fields={"error": type(error).__name__})
        )
        return replies.INTERNAL_ERROR

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str) -> None:
        self._in_helo = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._in_helo = False

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        self._in_helo = bool(hostname)  # "501 Syntax: EHLO hostname" is not exempt
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._in_helo = False

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        assert self.session is not None
        if self._tls_protocol is not None:
            await self.push(replies.TLS_ACTIVE)
            return
        if self.tls_context and not self.session.extended_smtp:
            await self.push(replies.EHLO_FIRST)
            return
        await super().smtp_STARTTLS(arg)

    async def smtp_AUTH(self, arg: str) -> None:
        """No ``@syntax``: an MX takes no logins, so AUTH is neither served nor in HELP."""
        await self.push(replies.NO_AUTH)

    # ------------------------------------------------------------------ chunked DATA

    async def smtp_DATA(self, arg: str) -> None:
        if not self.chunked_data:
            await self._stock_DATA(arg)
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
        if not await self._enter_data():
            return
        try:
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            self._start_data_clock(rate=True)
            content = await self._read_data()
        finally:
            self._leave_data()
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
        status = replies.OK if status is MISSING else status
        self._delivered(status)
        await self.push(status)

    async def _stock_DATA(self, arg: str) -> None:
        """aiosmtpd's line reader (``chunked_data = false``), under the same DATA deadline."""
        if not await self._enter_data():
            return
        # aiosmtpd's own reader counts no bytes here, so only the deadline applies, not the rate.
        self._start_data_clock(rate=False)
        try:
            await super().smtp_DATA(arg)
        finally:
            self._leave_data()

    def _delivered(self, status: str) -> None:
        if status.startswith("250") and self.history is not None and self.session is not None:
            self.history.delivered(peer_ip(self.session))

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
            self._data_bytes += len(chunk)
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
