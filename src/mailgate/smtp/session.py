"""One SMTP session as an ``asyncio.Protocol``: commands are answered inside ``data_received``.

Why not aiosmtpd's ``SMTP`` class (used up to issue 16): it runs every session as a task that
awaits a stream reader line by line and awaits a drain after every reply, so each command costs
a few event-loop round trips and each connection builds a stream reader, a writer, a task and
several dicts by introspection. Under one connection per message (what an MX sees) that was
~0.8 ms per message on this machine, more than the whole of Postfix's smtpd; the same dialogue
answered synchronously from ``data_received`` costs a third of it (``bench/side_by_side.py``).
Only what must wait runs as a task: the PROXY header, the pregreet delay, STARTTLS and the
handler's DATA (authentication, content checks and the durable spool commit). Replies to
pipelined commands leave in one write.

Semantics kept from aiosmtpd (replies with RFC 3463 enhanced codes, ``replies.enhanced``):
command lines end at LF (CRLF or bare LF) and are limited to ``max_command_length`` (MAIL gets
36 more after EHLO for SIZE and SMTPUTF8); five unknown commands end the session; STARTTLS
drops whatever plaintext was pipelined after it (CVE-2011-0411) and forgets the EHLO;
``require_tls`` refuses all but NOOP/EHLO/STARTTLS/QUIT before TLS; VRFY answers 252 and
EXPN 502; AUTH is 502 (an MX takes no logins) and absent from EHLO and HELP.

Connection economics (issue 12; Postfix ``smtpd_timeout``/``anvil``/postscreen, Haraka
``limit``/``early_talker``), each cut answered with a 421 that names it:

* admission: caps in all, per IP, per network, and slots reserved for clean clients
  (``connections.ConnectionCounter``), checked before the banner;
* pregreet: an unknown client waits ``greet_delay`` for the banner; whoever talks first
  (now, or with bytes already buffered when the banner is due) gets 554 5.5.1 and is closed;
* deadlines that no trickle of bytes can reset: the whole session (``session_timeout``), the
  whole DATA phase (``data_timeout``) and, after ``min_data_rate_grace``, a minimum average DATA
  rate (``min_data_rate``); the idle timeout (reset by each complete command line and each
  DATA chunk) cuts with 421 4.4.2;
* at most ``max_data_per_network`` sessions of one network in DATA at once;
* ``max_errors`` error replies without a delivered message end the session (Postfix
  ``smtpd_hard_error_limit``): recipient harvesting and probing get 421 4.7.0.

DATA is read as it arrives and scanned for ``CRLF.CRLF``; dot-stuffing is removed with one
``replace``:

* only ``<CRLF>.<CRLF>`` ends DATA; a lone LF or CR around the dot is data (the SMTP
  smuggling fix of aiosmtpd 1.4.5, CVE-2024-27305);
* the terminator may span two reads; an empty body is ``.\\r\\n`` right after the 354;
* bytes after the terminator (pipelined commands) are read as commands once DATA is answered;
* size (counted on the wire, before dot-stuffing is removed) and line-length limits are
  enforced while reading, and the reply is sent only once the whole DATA has been read
  (RFC 5321 4.2.5), discarding the excess at once.
"""

from __future__ import annotations

import asyncio
import contextvars
import ssl
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import ahocorasick_rs
from aiosmtpd.proxy_protocol import get_proxy

from mailgate import metrics
from mailgate.config import SmtpConfig
from mailgate.envelope import new_id
from mailgate.logs import get_logger, log_fields, set_log_context
from mailgate.smtp import replies
from mailgate.smtp.connections import ConnectionCounter, ConnectionLimits, PeerHistory
from mailgate.smtp.paths import parse_params, parse_path, strip_keyword
from mailgate.smtp.state import Envelope, Session, peer_ip

if TYPE_CHECKING:
    from mailgate.smtp.handler import SmtpHandler

log = get_logger("smtp")

IDENT = "mailgate ESMTP"
_TERMINATOR = b"\r\n.\r\n"
_STUFFED = b"\r\n.."
# SIMD searches (ahocorasick_rs's packed "Teddy" searcher): ``bytes.find`` of these needles
# steps only a few bytes at a time, since their last byte ("\n", ".") is common in mail: 45-65
# µs per 100 KB each, where these take ~4 (~8 % of the listener's CPU per 100 KB message).
_TERMINATOR_SEARCH = ahocorasick_rs.BytesAhoCorasick([_TERMINATOR])
_STUFFED_SEARCH = ahocorasick_rs.BytesAhoCorasick([_STUFFED])
_BOGUS_LIMIT = 5
_ALLOWED_BEFORE_STARTTLS = frozenset({"NOOP", "EHLO", "STARTTLS", "QUIT"})
_PROXY_TIMEOUT = 10.0
_MAX_PENDING = 1 << 20
"""Bytes buffered while a command waits (DATA's commit, STARTTLS) before reading pauses."""
_HELP = {
    "DATA": "DATA",
    "EHLO": "EHLO hostname",
    "HELO": "HELO hostname",
    "HELP": "HELP [command]",
    "MAIL": "MAIL FROM: <address>",
    "NOOP": "NOOP [ignored]",
    "QUIT": "QUIT",
    "RCPT": "RCPT TO: <address>",
    "RSET": "RSET",
    "STARTTLS": "STARTTLS",
    "VRFY": "VRFY <address>",
}
_HELP_EXTENDED = {"MAIL": " [SP <mail-parameters>]", "RCPT": " [SP <mail-parameters>]"}


@dataclass(frozen=True)
class SessionSettings:
    """What a session is built with; ``server.py`` makes a new one on reload, so a session in
    progress keeps the config, handler and TLS context it started with."""

    cfg: SmtpConfig
    handler: SmtpHandler
    tls: ssl.SSLContext | None = None
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    connections: ConnectionCounter | None = None
    history: PeerHistory | None = None


class SmtpSession(asyncio.Protocol):
    """See the module docstring. One instance per connection."""

    def __init__(
        self,
        settings: SessionSettings,
        *,
        on_open: Callable[[SmtpSession], None] | None = None,
        on_close: Callable[[SmtpSession], None] | None = None,
    ) -> None:
        self.settings = settings
        self._on_open = on_open
        self._on_close = on_close
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.session = Session(peer=None)
        self.envelope = Envelope()
        self._ctx = contextvars.copy_context()
        self._buf = bytearray()  # command bytes not yet read
        self._out: list[bytes] = []  # replies not yet written
        self._closed = False
        self._waiting = True  # a task (greeting, PROXY, STARTTLS, DATA's handler) has the turn
        self._task: asyncio.Task[None] | None = None
        self._proxy_reader: asyncio.StreamReader | None = None
        self._paused: set[str] = set()  # why reading is paused ("pending", "writing")
        self._overlong = False  # discarding a command line longer than the limit
        self._bogus = _BOGUS_LIMIT
        self._errors = 0  # error replies since the session's last delivered message
        self._in_data = False
        self._data = bytearray()
        self._data_error: str | None = None
        self._data_partial = 0  # length of the DATA line not yet terminated
        self._counted_ip: str | None = None
        self._active = False  # counted in SMTP_ACTIVE
        self._data_ip: str | None = None
        self._last_active = time.monotonic()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._session_timer: asyncio.TimerHandle | None = None
        self._data_timer: asyncio.TimerHandle | None = None
        self._data_started = 0.0
        self._data_bytes = 0
        self._data_rate = False

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.session.peer = transport.get_extra_info("peername")
        if self._on_open is not None:
            self._on_open(self)
        self._ctx.run(self._open)

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        if self._proxy_reader is not None:
            self._proxy_reader.feed_data(data)
            return
        if self._in_data and not self._waiting:
            self._ctx.run(self._feed_data, data)
            return
        self._buf += data
        if self._waiting:
            if len(self._buf) > _MAX_PENDING:
                self._pause("pending")
            return
        self._ctx.run(self._process)

    def eof_received(self) -> bool | None:
        if self._proxy_reader is not None:
            self._proxy_reader.feed_eof()
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        for timer in (self._session_timer, self._data_timer, self._idle_timer):
            if timer is not None:
                timer.cancel()
        self._leave_data()
        if self._proxy_reader is not None:
            self._proxy_reader.feed_eof()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self.settings.handler.reset(self.envelope)
        connections = self.settings.connections
        if self._counted_ip is not None and connections is not None:
            connections.live.discard(self)
            connections.close(self._counted_ip)
            self._counted_ip = None
        if self._active:
            self._active = False
            metrics.SMTP_ACTIVE.dec()
        if self._on_close is not None:
            self._on_close(self)

    def pause_writing(self) -> None:
        # the client does not read its replies: stop reading its commands until it does
        self._pause("writing")

    def resume_writing(self) -> None:
        self._resume("writing")

    # ------------------------------------------------------------------ the session's state

    @property
    def in_transaction(self) -> bool:
        """A MAIL FROM was accepted and the transaction has not ended: closing now loses it."""
        return self.envelope.mail_from is not None

    def idle_for(self, now: float) -> float:
        """Seconds since the last command line or DATA chunk (0 in DATA: its deadlines rule)."""
        return 0.0 if self._data_ip is not None else now - self._last_active

    def cut_idle(self) -> None:
        """Cut by the stress sweep (``connections.ConnectionCounter.relieve``)."""
        connections = self.settings.connections
        if self._counted_ip is not None and connections is not None:
            connections.penalize(self._counted_ip, self.settings.limits)
        self.cut(replies.STRESS_IDLE_TIMEOUT, "stress-idle-timeout")

    def cut(self, reply: str, reason: str | None) -> None:
        """Send ``reply`` (and any reply still held) and close now."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if reason is not None:
            metrics.SMTP_REJECTED.labels(reason=reason).inc()
            log.info(
                "session cut",
                extra=log_fields(fields={"reason": reason, "client_ip": peer_ip(self.session)}),
            )
        self._out.append(reply.encode() + b"\r\n")
        self._flush()
        transport.close()
        self._closed = True

    def _pause(self, why: str) -> None:
        if not self._paused and self.transport is not None:
            self.transport.pause_reading()
        self._paused.add(why)

    def _resume(self, why: str) -> None:
        if why in self._paused:
            self._paused.discard(why)
            if not self._paused and self.transport is not None and not self._closed:
                self.transport.resume_reading()

    def _run(self, coro: Coroutine[Any, Any, None]) -> None:
        """Give the turn to ``coro`` (a task in this session's log context); commands wait."""
        self._waiting = True
        self._task = self.loop.create_task(coro, context=self._ctx)

    def _resume_commands(self) -> None:
        """The task is done: read what arrived meanwhile."""
        self._waiting = False
        self._task = None
        self._resume("pending")
        if not self._closed:
            self._process()

    # ------------------------------------------------------------------ opening

    def _open(self) -> None:
        s = self.settings
        # one trace per session: every line it logs and the messages it brings carry it
        set_log_context(trace_id=new_id("trc")[4:])
        metrics.SMTP_SESSIONS.inc()
        self._session_timer = self.loop.call_later(
            s.cfg.session_timeout, self.cut, replies.SESSION_TIMEOUT, "session-timeout"
        )
        self._arm_idle(s.cfg.idle_timeout)
        if s.cfg.proxy_protocol:
            self._proxy_reader = asyncio.StreamReader(limit=1 << 16)
            self._run(self._read_proxy())
            return
        if s.connections is not None:
            ip = peer_ip(self.session)
            clean = s.history is not None and s.history.is_clean(ip)
            hit = s.connections.try_open(ip, s.limits, clean=clean)
            if hit is not None:
                metrics.SMTP_REJECTED.labels(reason=f"connections-{hit}").inc()
                text = {
                    "per-ip": replies.TOO_MANY_CONNECTIONS_IP,
                    "per-network": replies.TOO_MANY_CONNECTIONS_NETWORK,
                }.get(hit, replies.TOO_MANY_CONNECTIONS)
                self.cut(text, None)
                return
            self._counted_ip = ip
            s.connections.live.add(self)
        self._begin_greeting()

    async def _read_proxy(self) -> None:
        reader = self._proxy_reader
        assert reader is not None
        try:
            data = await asyncio.wait_for(get_proxy(reader), _PROXY_TIMEOUT)
        except Exception:  # a timeout, the peer gone, or a header aiosmtpd cannot parse
            data = None
        self._proxy_reader = None
        if self._closed:
            return
        if not data or not self.settings.handler.accept_proxy(self.session, data):
            log.info("invalid PROXY header", extra=log_fields(fields={"client_ip": self._ip()}))
            assert self.transport is not None
            self.transport.close()
            return
        self.session.proxy_data = data
        self._buf += reader._buffer  # type: ignore[attr-defined]  # what followed the header
        self._last_active = time.monotonic()
        self._begin_greeting()

    def _begin_greeting(self) -> None:
        s = self.settings
        self._active = True
        metrics.SMTP_ACTIVE.inc()
        delay = s.cfg.greet_delay
        if delay > 0 and s.history is not None and s.history.skips_greet_delay(self._ip()):
            delay = 0.0
        if delay > 0:
            self._waiting = True
            self._task = None
            self.loop.call_later(delay, self._ctx.run, self._greet, delay)
        else:
            self._greet(0.0)

    def _greet(self, waited: float) -> None:
        """The pregreet test, then the banner; an early talker is refused and closed."""
        if self._closed:
            return
        s = self.settings
        if self._buf:
            metrics.SMTP_REJECTED.labels(reason="early-talker").inc()
            log.info(
                "early talker refused",
                extra=log_fields(fields={"client_ip": self._ip(), "waited": waited}),
            )
            self._buf.clear()
            self.cut(replies.EARLY_TALKER, None)
            return
        if waited > 0 and s.history is not None:
            s.history.passed_greeting(self._ip())
        self._out.append(f"220 {s.cfg.hostname} {IDENT}\r\n".encode())
        self._flush()
        self._waiting = False
        self._resume("pending")

    def _ip(self) -> str:
        return peer_ip(self.session)

    # ------------------------------------------------------------------ timers

    def _arm_idle(self, after: float) -> None:
        self._idle_timer = self.loop.call_later(after, self._check_idle)

    def _check_idle(self) -> None:
        # one timer per session, re-armed when it fires, instead of one per command
        self._idle_timer = None
        if self._closed:
            return
        timeout = self.settings.cfg.idle_timeout
        idle = time.monotonic() - self._last_active
        if idle >= timeout - 0.005 and self._task is None:
            self.cut(replies.IDLE_TIMEOUT, "idle-timeout")
        else:
            self._arm_idle(max(timeout - idle, 0.01) if self._task is None else timeout)

    def _start_data_clock(self) -> None:
        s = self.settings
        self._data_started = self.loop.time()
        self._data_bytes = 0
        self._data_rate = s.cfg.min_data_rate > 0
        self._data_timer = self.loop.call_at(self._next_data_check(), self._check_data)

    def _next_data_check(self) -> float:
        """The earliest time the DATA deadline or the minimum rate could be broken.

        Checked by one timer re-armed only when it fires, so the per-chunk cost is a counter.
        """
        s = self.settings
        start = self._data_started
        at = start + s.cfg.data_timeout
        if self._data_rate:
            at = min(
                at, start + max(s.cfg.min_data_rate_grace, self._data_bytes / s.cfg.min_data_rate)
            )
        return max(at, self.loop.time() + 0.01)

    def _check_data(self) -> None:
        self._data_timer = None
        s = self.settings
        elapsed = self.loop.time() - self._data_started
        if elapsed >= s.cfg.data_timeout - 0.005:
            self.cut(replies.DATA_TIMEOUT, "data-timeout")
        elif (
            self._data_rate
            and elapsed >= s.cfg.min_data_rate_grace
            and self._data_bytes < s.cfg.min_data_rate * elapsed
        ):
            self.cut(replies.DATA_TOO_SLOW, "data-too-slow")
        else:
            self._data_timer = self.loop.call_at(self._next_data_check(), self._check_data)

    def _leave_data(self) -> None:
        if self._data_timer is not None:
            self._data_timer.cancel()
            self._data_timer = None
        connections = self.settings.connections
        if self._data_ip is not None and connections is not None:
            connections.leave_data(self._data_ip)
        self._data_ip = None

    # ------------------------------------------------------------------ replies

    def _reply(self, text: str) -> None:
        self._out.append(replies.enhanced(text).encode("utf-8", "surrogateescape") + b"\r\n")
        if text[:1] in "45" and not text.startswith("452"):
            # 452 (too many recipients) is flow control: the client sends the rest later
            self._errors += 1
            limit = self.settings.cfg.max_errors
            if limit and self._errors >= limit:
                self.cut(replies.TOO_MANY_ERRORS, "too-many-errors")

    def _flush(self) -> None:
        if self._out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self._out))
        self._out.clear()

    # ------------------------------------------------------------------ commands

    def _process(self) -> None:
        """Answer every complete command line in the buffer, until one needs to wait."""
        buf = self._buf
        limit = self.settings.cfg.max_command_length
        try:
            while not self._waiting and not self._closed:
                if self._in_data:
                    pending = bytes(buf)
                    buf.clear()
                    if pending:
                        self._feed_data(pending)
                    return
                end = buf.find(b"\n")
                if end < 0:
                    if len(buf) > limit + 512:
                        self._overlong = True  # keep reading until its end, then 500
                        buf.clear()
                    return
                line = bytes(buf[:end]).rstrip(b"\r\n")
                del buf[: end + 1]
                if self._overlong:
                    self._overlong = False
                    self._reply("500 Command line too long")
                    continue
                try:
                    self._command(line)
                except Exception as exc:  # a bug must not end the session with a 5xx
                    log.exception(
                        "smtp session error", extra=log_fields(fields={"error": type(exc).__name__})
                    )
                    self._reply(replies.INTERNAL_ERROR)
        finally:
            self._flush()

    def _command(self, line: bytes) -> None:
        if not line:
            self._reply("500 Error: bad syntax")
            return
        verb_bytes, _, arg_bytes = line.partition(b" ")
        try:
            verb = verb_bytes.upper().decode("ascii")
        except UnicodeDecodeError:
            self._reply("500 Error: bad syntax")
            return
        # arguments may be UTF-8 (SMTPUTF8) or stray 8-bit: surrogateescape keeps the bytes
        arg = arg_bytes.strip().decode("utf-8", "surrogateescape") if arg_bytes else ""
        limit = self.settings.cfg.max_command_length
        if verb == "MAIL" and self.session.extended_smtp:
            limit += 36  # RFC 1870 SIZE (26) and RFC 6531 SMTPUTF8 (10) parameters
        if len(line) > limit:
            self._reply("500 Command line too long")
            return
        if (
            self.settings.cfg.require_tls
            and self.settings.tls is not None
            and self.session.ssl is None
            and verb not in _ALLOWED_BEFORE_STARTTLS
        ):
            self._reply(replies.NEED_TLS)
            return
        method = _COMMANDS.get(verb)
        if method is None:
            self._bogus -= 1
            if self._bogus < 1:
                log.info(
                    "too many bogus commands", extra=log_fields(fields={"client_ip": self._ip()})
                )
                self.cut("502 5.5.1 Too many unrecognized commands, goodbye.", None)
                return
            self._reply(f'500 Error: command "{verb[:32]}" not recognized')
            return
        self._last_active = time.monotonic()
        method(self, arg)

    def _reset(self) -> None:
        self.settings.handler.reset(self.envelope)
        self.envelope = Envelope()

    def _helo_needed(self) -> bool:
        if not self.session.host_name:
            self._reply("503 Error: send HELO first")
            return True
        return False

    def smtp_HELO(self, arg: str) -> None:
        if not arg:
            self._reply("501 Syntax: HELO hostname")
            return
        self._reset()
        self.session.extended_smtp = False
        self.session.host_name = arg
        self._out.append(f"250 {self.settings.cfg.hostname}\r\n".encode())  # RFC 2034: no code

    def smtp_EHLO(self, arg: str) -> None:
        """Advertise PIPELINING (RFC 2920: commands are read in order, replies are held for one
        write) and ENHANCEDSTATUSCODES (RFC 2034: every reply after the EHLO carries one);
        never AUTH: an MX takes no logins."""
        if not arg:
            self._reply("501 Syntax: EHLO hostname")
            return
        self._reset()
        s = self.settings
        self.session.extended_smtp = True
        self.session.host_name = arg
        lines = [s.cfg.hostname]
        if s.cfg.max_message_size:
            lines.append(f"SIZE {s.cfg.max_message_size}")
        lines += ["8BITMIME", "SMTPUTF8"]
        if s.tls is not None and self.session.ssl is None:
            lines.append("STARTTLS")
        lines += ["PIPELINING", "ENHANCEDSTATUSCODES"]
        text = "".join(f"250-{line}\r\n" for line in lines) + "250 HELP\r\n"
        self._out.append(text.encode("utf-8", "surrogateescape"))

    def smtp_NOOP(self, arg: str) -> None:
        self._reply(replies.OK)

    def smtp_QUIT(self, arg: str) -> None:
        if arg:
            self._reply("501 Syntax: QUIT")
            return
        self.cut("221 2.0.0 Bye", None)

    def smtp_RSET(self, arg: str) -> None:
        if arg:
            self._reply("501 Syntax: RSET")
            return
        self._reset()
        self._reply(replies.OK)

    def smtp_HELP(self, arg: str) -> None:
        names = sorted(n for n in _HELP if n != "STARTTLS" or self.settings.tls is not None)
        if arg:
            name = arg.upper()
            if name in names:
                self._reply(f"250 Syntax: {self._usage(name)}")
                return
            self._reply("501 Supported commands: " + " ".join(names))
            return
        self._reply("250 Supported commands: " + " ".join(names))

    def smtp_VRFY(self, arg: str) -> None:
        if not arg:
            self._reply("501 Syntax: VRFY <address>")
        elif parse_path(arg)[0] is None:
            self._reply("502 Could not VRFY that address")
        else:
            self._reply("252 Cannot VRFY user, but will accept message and attempt delivery")

    def smtp_EXPN(self, arg: str) -> None:
        self._reply("502 EXPN not implemented")

    def smtp_AUTH(self, arg: str) -> None:
        self._reply(replies.NO_AUTH)

    def _path_arg(self, keyword: str, arg: str, syntaxerr: str) -> tuple[str, str] | None:
        """``(address, rest)`` of ``FROM:<path> rest`` / ``TO:<path> rest``; None: answered."""
        path = strip_keyword(keyword, arg) if arg else None
        if path is None:
            self._reply(syntaxerr)
            return None
        address, rest = parse_path(path)
        if address is None:
            self._reply("553 5.1.3 Error: malformed address")
            return None
        if not address or (rest and not self.session.extended_smtp):
            self._reply(syntaxerr)
            return None
        return address, rest or ""

    def _params(self, rest: str, syntaxerr: str) -> tuple[list[str], dict[str, str | bool]] | None:
        """The ESMTP parameters after a path (upper-cased) and as a dict; None: answered."""
        options = rest.upper().split()
        params = parse_params(options)
        if params is None:
            self._reply(syntaxerr)
            return None
        return options, params

    def _usage(self, verb: str) -> str:
        """``verb``'s syntax as HELP and a 501 give it (with parameters after EHLO)."""
        extended = _HELP_EXTENDED.get(verb, "") if self.session.extended_smtp else ""
        return _HELP[verb] + extended

    def smtp_MAIL(self, arg: str) -> None:
        if self._helo_needed():
            return
        syntaxerr = "501 Syntax: " + self._usage("MAIL")
        path = self._path_arg("FROM:", arg, syntaxerr)
        if path is None:
            return
        if self.envelope.mail_from is not None:
            self._reply("503 Error: nested MAIL command")
            return
        parsed = self._params(path[1], syntaxerr)
        if parsed is None:
            return
        options, params = parsed
        if params.pop("BODY", "7BIT") not in ("7BIT", "8BITMIME"):
            self._reply("501 Error: BODY can only be one of 7BIT, 8BITMIME")
            return
        utf8 = params.pop("SMTPUTF8", False)
        if not isinstance(utf8, bool):
            self._reply("501 Error: SMTPUTF8 takes no arguments")
            return
        size = params.pop("SIZE", None)
        if size is not None:
            if not isinstance(size, str) or not size.isdigit():
                self._reply(syntaxerr)
                return
            limit = self.settings.cfg.max_message_size
            if limit and int(size) > limit:
                metrics.SMTP_REJECTED.labels(reason="too-big").inc()
                self._reply(replies.TOO_BIG)
                return
        if params:
            self._reply("555 MAIL FROM parameters not recognized or not implemented")
            return
        self.envelope.smtp_utf8 = utf8
        self._reply(self.settings.handler.mail(self.session, self.envelope, path[0], options))

    def smtp_RCPT(self, arg: str) -> None:
        if self._helo_needed():
            return
        if self.envelope.mail_from is None:
            self._reply("503 Error: need MAIL command")
            return
        syntaxerr = "501 Syntax: " + self._usage("RCPT")
        path = self._path_arg("TO:", arg, syntaxerr)
        if path is None:
            return
        parsed = self._params(path[1], syntaxerr)
        if parsed is None:
            return
        options, params = parsed
        if params:
            self._reply("555 RCPT TO parameters not recognized or not implemented")
            return
        self._reply(self.settings.handler.rcpt(self.session, self.envelope, path[0], options))

    def smtp_STARTTLS(self, arg: str) -> None:
        tls = self.settings.tls
        if self.session.ssl is not None:
            self._reply(replies.TLS_ACTIVE)
        elif tls is not None and not self.session.extended_smtp:
            self._reply(replies.EHLO_FIRST)
        elif arg:
            self._reply("501 Syntax: STARTTLS")
        elif tls is None:
            self._reply("454 TLS not available")
        else:
            self._reply("220 Ready to start TLS")
            self._flush()
            # RFC 3207 5: nothing the client pipelined after STARTTLS is read (CVE-2011-0411)
            self._buf.clear()
            self._run(self._start_tls(tls))

    async def _start_tls(self, tls: ssl.SSLContext) -> None:
        transport = self.transport
        assert transport is not None
        try:
            new = await self.loop.start_tls(transport, self, tls, server_side=True)
        except (TimeoutError, OSError, ssl.SSLError, ConnectionError) as exc:
            log.info(
                "tls handshake failed",
                extra=log_fields(fields={"client_ip": self._ip(), "error": type(exc).__name__}),
            )
            transport.close()
            return
        if new is None or self._closed:
            transport.close()
            return
        self.transport = new
        self._reset()
        self.session.host_name = None  # RFC 3207 4.2: start over with EHLO
        self.session.extended_smtp = False
        self.session.ssl = new.get_extra_info("ssl_object")
        self._resume_commands()

    # ------------------------------------------------------------------ DATA

    def smtp_DATA(self, arg: str) -> None:
        if self._helo_needed():
            return
        if not self.envelope.rcpt_tos:
            self._reply("503 Error: need RCPT command")
            return
        if arg:
            self._reply("501 Syntax: DATA")
            return
        s = self.settings
        if s.connections is not None:
            ip = self._ip()
            if not s.connections.try_enter_data(ip, s.limits):
                self.cut(replies.TOO_MANY_TRANSFERS_NETWORK, "data-per-network")
                return
            self._data_ip = ip
        self._reply("354 End data with <CR><LF>.<CR><LF>")
        self._start_data_clock()
        # A virtual CRLF before the first line lets one search find ".\r\n" as the empty body
        # and a leading "..", and makes every line start right after a CRLF.
        self._data = bytearray(b"\r\n")
        self._data_error = None
        self._data_partial = 0
        self._in_data = True

    def _feed_data(self, chunk: bytes) -> None:
        """One piece of DATA; at the terminator the message goes to the handler."""
        self._last_active = time.monotonic()
        self._data_bytes += len(chunk)
        buf = self._data
        search_from = max(0, len(buf) - 4)
        buf += chunk
        end = _find(_TERMINATOR_SEARCH, buf, search_from)
        if self._data_error is None:
            self._data_error = self._data_limits(chunk, buf, end)
        if end < 0:
            if self._data_error is not None:
                del buf[: len(buf) - 4]  # keep only the tail that may start the terminator
            return
        # the end of DATA: what follows the dot is the next commands
        self._buf[0:0] = buf[end + 5 :]
        self._in_data = False
        self._leave_data()
        error = self._data_error
        self._data = bytearray()
        if error is not None:
            if error == replies.TOO_BIG:
                metrics.SMTP_REJECTED.labels(reason="too-big").inc()
            self._reset()
            self._reply(error)
            self._process()
            return
        del buf[end + 2 :]
        if _find(_STUFFED_SEARCH, buf, 0) >= 0:
            content = bytes(buf).replace(_STUFFED, b"\r\n.")[2:]
        else:
            content = bytes(buf[2:])
        self.envelope.content = content
        self._flush()
        self._run(self._deliver())

    def _data_limits(self, chunk: bytes, buf: bytearray, end: int) -> str | None:
        """The reply DATA earns so far (a line or the message too long), or None.

        Only this chunk is looked at, plus the length of the line it continues: the lines that
        start and end inside it are only measured when the chunk is longer than a line may be.
        """
        max_line = self.settings.cfg.max_line_length
        first = chunk.find(b"\n")
        if first < 0:
            self._data_partial += len(chunk)
            longest = self._data_partial
        else:
            last = chunk.rfind(b"\n")
            longest = self._data_partial + first
            if last - first - 1 > max_line:
                longest = max(longest, _longest_line(chunk[first + 1 : last], last - first - 1))
            self._data_partial = len(chunk) - last - 1
        # once DATA has ended, only its own lines count (not pipelined commands after the dot)
        if longest > max_line and (end < 0 or _longest_line(buf, end + 2) > max_line):
            return replies.LINE_TOO_LONG
        limit = self.settings.cfg.max_message_size
        # the message is buf[2 : end + 2] (after the virtual CRLF): ``end`` bytes once it ended
        if limit and (end if end >= 0 else len(buf) - 2) > limit:
            return replies.TOO_BIG
        return None

    async def _deliver(self) -> None:
        envelope = self.envelope
        try:
            status = await self.settings.handler.data(self.session, envelope)
        except Exception as exc:
            log.exception(
                "smtp session error", extra=log_fields(fields={"error": type(exc).__name__})
            )
            status = replies.INTERNAL_ERROR
        if self._closed:
            return
        history = self.settings.history
        if status.startswith("250"):
            self._errors = 0  # Postfix too counts errors made without delivering mail
            if history is not None:
                history.delivered(self._ip())
        self._reset()
        self._reply(status)
        self._resume_commands()


def _find(search: ahocorasick_rs.BytesAhoCorasick, buf: bytearray, start: int) -> int:
    """``buf.find(needle, start)`` for ``search``'s one needle. The views are released before
    returning: a bytearray with a live export cannot grow (the next chunk appends to it)."""
    with memoryview(buf) as view, view[start:] as rest:
        found = search.find_matches_as_indexes(rest)
    return start + int(found[0][1]) if found else -1


def _longest_line(buf: bytes | bytearray, stop: int) -> int:
    """Longest line (without its LF) in ``buf[:stop]``."""
    return max(map(len, bytes(buf[:stop]).split(b"\n")), default=0)


_COMMANDS: dict[str, Callable[[SmtpSession, str], None]] = {
    name[5:]: getattr(SmtpSession, name) for name in dir(SmtpSession) if name.startswith("smtp_")
}
