"""A real authoritative DNS server on loopback, serving in-memory zones that tests edit.

Built on dnslib's server: one UDP and one TCP listener on the same ephemeral 127.0.0.1 port,
answering from a dict of records guarded by a lock, so a test may add or remove records while
the server runs. It behaves like an authoritative server: in-zone CNAMEs are chased into the
answer, empty non-terminals get NODATA, unknown names NXDOMAIN (both with an SOA whose minimum
sets the negative TTL), UDP answers larger than the client's EDNS payload (512 without EDNS)
are truncated so the client retries over TCP.

Failure simulation: :meth:`DnsTestServer.set_timeout` (never answer) and
:meth:`DnsTestServer.set_servfail` for chosen names/types, or ``dead=True`` for a server that
never answers anything.

Usage::

    with DnsTestServer() as dns:
        dns.add_txt("example.com", "v=spf1 ip4:192.0.2.0/24 -all")
        cfg = AuthConfig(nameservers=[dns.address])   # "127.0.0.1:PORT"

or the ``dns_server`` pytest fixture (import it explicitly in the test module).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from dnslib import (
    AAAA,
    CNAME,
    MX,
    PTR,
    QTYPE,
    RCODE,
    RR,
    SOA,
    TXT,
    A,
    DNSError,
    DNSRecord,
)
from dnslib.server import DNSHandler, DNSLogger, DNSServer

__all__ = ["DnsTestServer", "SilentUdpPort", "dns_server", "split_txt"]

_TYPES = ("A", "AAAA", "MX", "PTR", "CNAME", "TXT", "SPF")


def split_txt(value: str | bytes) -> list[bytes]:
    """A long TXT value as the 255-byte character-strings DNS carries (RFC 1035 3.3.14)."""
    data = value.encode() if isinstance(value, str) else value
    if not data:
        return [b""]
    return [data[i : i + 255] for i in range(0, len(data), 255)]


def _norm(name: str) -> str:
    return name.strip().rstrip(".").lower()


@dataclass
class _Entry:
    rtype: str
    value: Any
    ttl: int


class _Drop(DNSError):
    """Raised inside the handler to send no answer at all (a timeout for the client)."""


class _QuietLogger(DNSLogger):
    def __init__(self) -> None:
        super().__init__(log="-request,-reply,-truncated,-error,-recv,-send,-data")

    def log_error(self, handler: Any, e: Any) -> None:
        return


class _Handler(DNSHandler):
    def get_reply(self, data: bytes) -> bytes:
        request = DNSRecord.parse(data)
        server: DnsTestServer = self.server.dns_test_server  # type: ignore[attr-defined]
        reply = server._resolve(request)
        if reply is None:
            raise _Drop("simulated timeout")
        packed: bytes = reply.pack()
        if self.protocol == "udp":
            limit = 512
            for rr in request.ar:
                if rr.rtype == QTYPE.OPT:
                    limit = max(512, int(rr.rclass))
            if len(packed) > limit:
                short = request.reply()
                short.header.tc = 1
                short.header.rcode = reply.header.rcode
                packed = short.pack()
        return packed


class DnsTestServer:
    """See module docstring. Names are case-insensitive; values are plain Python data."""

    def __init__(
        self, host: str = "127.0.0.1", *, dead: bool = False, negative_ttl: int = 60
    ) -> None:
        self.host = host
        self.port = 0
        self.dead = dead
        self.negative_ttl = negative_ttl
        self._zones: dict[str, list[_Entry]] = {}
        self._timeouts: set[tuple[str, str | None]] = set()
        self._servfail: set[tuple[str, str | None]] = set()
        self._lock = threading.Lock()
        self._servers: list[DNSServer] = []
        self._threads: list[threading.Thread] = []
        self.queries: list[tuple[str, str]] = []

    # ------------------------------------------------------------------ lifecycle

    @property
    def address(self) -> str:
        """``"127.0.0.1:PORT"``: what ``[auth] nameservers`` takes."""
        return f"{self.host}:{self.port}"

    def start(self) -> DnsTestServer:
        last: OSError | None = None
        for _ in range(20):  # bounded: find a port free for both UDP and TCP
            udp = DNSServer(
                self, address=self.host, port=0, logger=_QuietLogger(), handler=_Handler
            )
            port = udp.server.server_address[1]
            try:
                tcp = DNSServer(
                    self,
                    address=self.host,
                    port=port,
                    tcp=True,
                    logger=_QuietLogger(),
                    handler=_Handler,
                )
            except OSError as exc:
                udp.server.server_close()
                last = exc
                continue
            for srv in (udp, tcp):
                srv.server.dns_test_server = self  # type: ignore[attr-defined]
                # A short poll interval keeps stop() fast (shutdown waits for one poll).
                thread = threading.Thread(
                    target=srv.server.serve_forever,
                    kwargs={"poll_interval": 0.02},
                    name=f"dns-test-{port}",
                    daemon=True,
                )
                thread.start()
                self._threads.append(thread)
            self._servers = [udp, tcp]
            self.port = port
            return self
        raise RuntimeError(f"no free port for the test DNS server: {last}")

    def stop(self) -> None:
        for srv in self._servers:
            srv.server.shutdown()
            srv.server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers = []
        self._threads = []

    def __enter__(self) -> DnsTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ zone editing

    def add(self, name: str, rtype: str, value: Any, ttl: int = 300) -> None:
        """Add one record. ``rtype`` is one of A AAAA MX PTR CNAME TXT SPF."""
        rtype = rtype.upper()
        if rtype not in _TYPES:
            raise ValueError(f"unsupported type {rtype}")
        with self._lock:
            self._zones.setdefault(_norm(name), []).append(_Entry(rtype, value, ttl))

    def add_txt(
        self, name: str, value: str | bytes | Sequence[str | bytes], ttl: int = 300
    ) -> None:
        """A TXT record. A str/bytes is split into 255-byte strings; a list is sent as given."""
        if isinstance(value, str | bytes):
            chunks = split_txt(value)
        else:
            chunks = [v.encode() if isinstance(v, str) else v for v in value]
        self.add(name, "TXT", chunks, ttl)

    def add_a(self, name: str, address: str, ttl: int = 300) -> None:
        self.add(name, "A", address, ttl)

    def add_aaaa(self, name: str, address: str, ttl: int = 300) -> None:
        self.add(name, "AAAA", address, ttl)

    def add_mx(self, name: str, exchange: str, preference: int = 10, ttl: int = 300) -> None:
        self.add(name, "MX", (preference, exchange), ttl)

    def add_ptr(self, ip_or_name: str, target: str, ttl: int = 300) -> None:
        """A PTR for an IP address (reverse name computed) or for an explicit name."""
        try:
            name = ipaddress.ip_address(ip_or_name).reverse_pointer
        except ValueError:
            name = ip_or_name
        self.add(name, "PTR", target, ttl)

    def add_cname(self, name: str, target: str, ttl: int = 300) -> None:
        self.add(name, "CNAME", target, ttl)

    def add_dkim_key(self, selector: str, domain: str, record: str | bytes, ttl: int = 300) -> None:
        """The DKIM key record at ``selector._domainkey.domain`` (RFC 6376 3.6.2.1)."""
        self.add_txt(f"{selector}._domainkey.{domain}", record, ttl)

    def remove(self, name: str, rtype: str | None = None) -> None:
        with self._lock:
            key = _norm(name)
            if rtype is None:
                self._zones.pop(key, None)
            else:
                kept = [e for e in self._zones.get(key, []) if e.rtype != rtype.upper()]
                if kept:
                    self._zones[key] = kept
                else:
                    self._zones.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._zones.clear()
            self._timeouts.clear()
            self._servfail.clear()
            self.queries.clear()

    def set_timeout(self, name: str, rtype: str | None = None) -> None:
        """Never answer queries for ``name`` (of ``rtype``, or of any type)."""
        with self._lock:
            self._timeouts.add((_norm(name), rtype.upper() if rtype else None))

    def set_servfail(self, name: str, rtype: str | None = None) -> None:
        """Answer SERVFAIL for ``name`` (of ``rtype``, or of any type)."""
        with self._lock:
            self._servfail.add((_norm(name), rtype.upper() if rtype else None))

    def load_zonedata(self, zonedata: dict[str, list[Any]]) -> None:
        """Load zone data in the openspf test-suite YAML shape.

        Each name maps to a list of ``{TYPE: value}`` dicts or the string ``"TIMEOUT"``; a
        TIMEOUT makes queries for types the name has no records of time out. As the suite
        expects of its drivers, SPF (type 99) records are also served as TXT unless the name
        lists TXT data of its own; the value ``"NONE"`` means "no such record".
        """
        for name, entries in zonedata.items():
            has_timeout = any(e == "TIMEOUT" for e in entries)
            has_txt = any(isinstance(e, dict) and "TXT" in e for e in entries)
            expanded: list[tuple[str, Any]] = []
            for entry in entries:
                if entry == "TIMEOUT":
                    continue
                for rtype, value in entry.items():
                    expanded.append((rtype.upper(), value))
                    if rtype.upper() == "SPF" and not has_txt:
                        expanded.append(("TXT", value))
            for rtype, value in expanded:
                if value == "NONE":
                    continue
                if value == "TIMEOUT":
                    self.set_timeout(name, rtype)
                elif rtype in ("TXT", "SPF"):
                    chunks = value if isinstance(value, list) else [value]
                    # A TXT RDATA holds at least one character-string (RFC 1035 3.3.14):
                    # the suite's empty record is served as one empty string.
                    self.add(name, rtype, [c.encode("utf-8") for c in chunks] or [b""])
                elif rtype == "MX":
                    pref, exchange = value
                    self.add(name, "MX", (int(pref), exchange))
                else:
                    self.add(name, rtype, value)
            if has_timeout:
                present = {e.rtype for e in self._zones.get(_norm(name), [])}
                for rtype in ("A", "AAAA", "MX", "PTR", "TXT", "SPF", "CNAME"):
                    if rtype not in present:
                        self.set_timeout(name, rtype)

    # ------------------------------------------------------------------ answering

    def _flagged(self, flags: set[tuple[str, str | None]], name: str, qtype: str) -> bool:
        return (name, None) in flags or (name, qtype) in flags

    def _exists(self, name: str) -> bool:
        if name in self._zones:
            return True
        suffix = "." + name
        return any(n.endswith(suffix) for n in self._zones)  # empty non-terminal

    def _resolve(self, request: DNSRecord) -> DNSRecord | None:
        if self.dead:
            return None
        qname = _norm(b".".join(request.q.qname.label).decode("latin-1"))
        qtype = QTYPE.get(request.q.qtype, str(request.q.qtype))
        with self._lock:
            self.queries.append((qname, qtype))
            if self._flagged(self._timeouts, qname, qtype):
                return None
            reply = request.reply()
            reply.header.aa = 1
            if self._flagged(self._servfail, qname, qtype):
                reply.header.aa = 0
                reply.header.rcode = RCODE.SERVFAIL
                return reply
            name = qname
            seen: set[str] = set()
            for _ in range(9):  # chase in-zone CNAMEs, as an authoritative server does
                entries = self._zones.get(name, [])
                cnames = [e for e in entries if e.rtype == "CNAME"]
                if cnames and qtype != "CNAME" and name not in seen:
                    seen.add(name)
                    reply.add_answer(self._rr(name, cnames[0]))
                    name = _norm(str(cnames[0].value))
                    if self._flagged(self._timeouts, name, qtype):
                        return None
                    continue
                matches = [e for e in entries if e.rtype == qtype]
                for e in matches:
                    reply.add_answer(self._rr(name, e))
                if not matches and not reply.rr:
                    if not self._exists(name):
                        reply.header.rcode = RCODE.NXDOMAIN
                    reply.add_auth(self._soa(name))
                break
            return reply

    def _rr(self, name: str, e: _Entry) -> RR:
        rtype = e.rtype
        rdata: Any
        if rtype == "A":
            rdata = A(e.value)
        elif rtype == "AAAA":
            rdata = AAAA(e.value)
        elif rtype == "MX":
            rdata = MX(e.value[1], e.value[0])
        elif rtype == "PTR":
            rdata = PTR(e.value)
        elif rtype == "CNAME":
            rdata = CNAME(e.value)
        else:  # TXT, SPF share the wire format (RFC 4408 3.1.1)
            rdata = TXT(list(e.value))
        return RR(name, getattr(QTYPE, rtype), rdata=rdata, ttl=e.ttl)

    def _soa(self, name: str) -> RR:
        zone = ".".join(name.split(".")[-2:]) if "." in name else name
        mname = f"ns.{zone}"
        soa = SOA(mname, f"hostmaster.{zone}", (1, 3600, 600, 86400, self.negative_ttl))
        return RR(zone, QTYPE.SOA, rdata=soa, ttl=self.negative_ttl)


class SilentUdpPort:
    """A bound UDP socket that reads nothing and answers nothing: a dead resolver."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.host, self.port = self.sock.getsockname()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> SilentUdpPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def dns_server() -> Iterator[DnsTestServer]:
    """A started :class:`DnsTestServer`, stopped after the test (also on failure)."""
    server = DnsTestServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
