"""The one DNS resolver every sender-authentication check uses, and its sync adapters.

Owns: nameserver configuration (``[auth] nameservers`` as ``IP`` or ``IP:PORT``; empty means the
system resolver), the per-query timeout, a small TTL-respecting cache shared by all checks
(positive answers by their TTL, negative ones by the SOA minimum, RFC 2308), coalescing of
identical in-flight queries, and the translation of DNS trouble into :class:`DnsTempError`.

pyspf and dkimpy are synchronous libraries. Rather than give them a second (blocking) resolver,
they run in a worker thread and reach *this* resolver through :class:`SyncBridge`: a cache hit is
answered in the thread without touching the event loop; a miss is submitted to the owning event
loop with ``run_coroutine_threadsafe`` and waited for no longer than the check's
:class:`Deadline`. So there is one resolver, one cache and one budget for every check, and the
event loop is never blocked by DNS or by the libraries' CPU work (hashing, RSA/Ed25519).

Does not own: the SPF/DKIM/DMARC logic (``spf.py`` ``dkim.py`` ``dmarc.py``), nor any policy
decision on a temperror (``checker.py``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdatatype
import dns.resolver

log = logging.getLogger("mailgate.auth")

# Types the checks ask for. SPF (type 99) is obsolete (RFC 7208 section 3.1) and never queried.
SUPPORTED_TYPES = ("A", "AAAA", "MX", "PTR", "TXT", "CNAME")

MAX_TTL = 3600.0  # keep a record at most an hour, whatever its TTL says
DEFAULT_NEGATIVE_TTL = 60.0  # when a negative answer carries no SOA
MAX_NEGATIVE_TTL = 900.0
MAX_CNAME_CHAIN = 8


class CacheMiss(BaseException):
    """Raised by a cache-only :class:`SyncBridge` when an answer is not cached.

    A ``BaseException`` so that library code catching ``Exception`` lets it through; the
    bridge also records every miss (``bridge.missed``) so a swallowed one is still noticed.
    """


class DnsTempError(Exception):
    """A transient DNS failure (timeout, SERVFAIL, unreachable server, budget spent).

    Every check maps it to ``temperror`` (RFC 7208 section 2.6.6, RFC 6376 section 6.1.2,
    RFC 7489 section 6.6.3) with ``str(exc)`` as the reason.
    """


class KeySource(Protocol):
    """What dkimpy's ``dnsfunc`` needs: the TXT record of a key name, or None if absent.

    Implemented by :class:`SyncBridge` (live, through the resolver) and by
    ``pool.StaticKeys`` (records fetched beforehand, for a verification process).
    """

    def dkim_txt(self, name: bytes | str, timeout: float = 5) -> bytes | None: ...


def pick_key_record(values: list[bytes]) -> bytes | None:
    """Of the TXT records at a key name, the one that looks like a key (has ``p=``)."""
    if not values:
        return None
    keyish = [v for v in values if b"p=" in v]
    return (keyish or values)[0]


@dataclass(frozen=True)
class Record:
    """One resource record of an answer section.

    ``value`` is ``str`` for A/AAAA (the address), PTR and CNAME (the target, no trailing dot),
    ``(preference, exchange)`` for MX and a tuple of ``bytes`` character-strings for TXT.
    """

    owner: str
    rdtype: str
    value: Any


@dataclass(frozen=True)
class Answer:
    """The outcome of one query: NOERROR (possibly with no data) or NXDOMAIN."""

    name: str
    rdtype: str
    rcode: str  # "NOERROR" | "NXDOMAIN"
    records: tuple[Record, ...] = ()

    def values(self) -> list[Any]:
        """The values of the asked type (after any CNAME chain the server included)."""
        return [r.value for r in self.records if r.rdtype == self.rdtype]

    def cname(self) -> str | None:
        """The CNAME target of ``name`` when the answer stops at a CNAME."""
        for r in self.records:
            if r.rdtype == "CNAME" and r.owner == self.name:
                return str(r.value)
        return None


class Deadline:
    """An absolute point in time (monotonic clock) by which a check must finish."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expires = time.monotonic() + seconds
        self.cancelled = threading.Event()

    def remaining(self) -> float:
        return self.expires - time.monotonic()

    def check(self) -> float:
        """Seconds left; raises :class:`DnsTempError` if none are or the check was abandoned."""
        left = self.remaining()
        if self.cancelled.is_set() or left <= 0:
            raise DnsTempError(f"DNS budget of {self.seconds:g}s exhausted")
        return left


def parse_nameserver(spec: str) -> tuple[str, int]:
    """``"127.0.0.1"`` / ``"127.0.0.1:5353"`` / ``"::1"`` / ``"[::1]:5353"`` -> (ip, port)."""
    spec = spec.strip()
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else 53
    elif spec.count(":") == 1:
        host, _, p = spec.partition(":")
        port = int(p)
    else:
        host, port = spec, 53
    ipaddress.ip_address(host)  # raises ValueError on anything that is not an IP
    if not 0 < port < 65536:
        raise ValueError(f"bad port in nameserver {spec!r}")
    return host, port


class _TTLCache:
    """A bounded LRU of answers with per-entry expiry; thread-safe (the bridge reads it)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[tuple[str, str], tuple[float, Answer]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, str]) -> Answer | None:
        with self._lock:
            item = self._data.get(key)
            if item is None:
                self.misses += 1
                return None
            expires, answer = item
            if expires <= time.monotonic():
                del self._data[key]
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return answer

    def put(self, key: tuple[str, str], answer: Answer, ttl: float) -> None:
        if self.size <= 0 or ttl <= 0:
            return
        with self._lock:
            self._data[key] = (time.monotonic() + ttl, answer)
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


def normalize_name(name: str | bytes) -> str:
    """A DNS name as the cache keys it: text, lower case, no trailing dot."""
    return _normalize(name)


def _normalize(name: str | bytes) -> str:
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    return name.strip().rstrip(".").lower()


def _name_text(name: dns.name.Name) -> str:
    """A name as plain text, labels unescaped (SPF macros can put spaces or ``%`` in names)."""
    return b".".join(label for label in name.labels if label).decode("latin-1").lower()


def _rdata_value(rdtype: str, rdata: Any) -> Any:
    if rdtype in ("A", "AAAA"):
        return str(rdata.address)
    if rdtype == "MX":
        return (int(rdata.preference), _name_text(rdata.exchange))
    if rdtype in ("PTR", "CNAME"):
        return _name_text(rdata.target)
    if rdtype == "TXT":
        return tuple(bytes(s) for s in rdata.strings)
    return rdata.to_text()


def _negative_ttl(response: dns.message.Message | None) -> float:
    """RFC 2308 section 5: negative answers live for min(SOA TTL, SOA MINIMUM)."""
    if response is not None:
        for rrset in response.authority:
            if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
                soa = rrset[0]
                return float(min(rrset.ttl, soa.minimum, MAX_NEGATIVE_TTL))
    return DEFAULT_NEGATIVE_TTL


class Resolver:
    """The async resolver with its cache. Create one per process (``AuthChecker`` does)."""

    def __init__(
        self,
        nameservers: Sequence[str] = (),
        *,
        timeout: float = 2.0,
        cache_size: int = 10000,
    ) -> None:
        self.timeout = timeout
        self.cache = _TTLCache(cache_size)
        self._inflight: dict[tuple[str, str], asyncio.Future[Answer]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.configured = True
        if nameservers:
            res = dns.asyncresolver.Resolver(configure=False)
            res.nameservers = [
                dns.nameserver.Do53Nameserver(*parse_nameserver(ns)) for ns in nameservers
            ]
        else:
            try:
                res = dns.asyncresolver.Resolver(configure=True)
            except dns.resolver.NoResolverConfiguration:
                res = dns.asyncresolver.Resolver(configure=False)
                self.configured = False
        # EDNS0 with the 1232-byte payload DNS Flag Day 2020 settled on: DKIM keys and SPF
        # records are often larger than 512 bytes; truncated answers are retried over TCP.
        res.use_edns(0, 0, 1232)
        res.retry_servfail = False
        res.cache = None  # our cache, shared with the sync bridge
        self._resolver = res

    @property
    def nameservers(self) -> list[str]:
        return [str(ns) for ns in self._resolver.nameservers]

    def cached(self, name: str | bytes, rdtype: str) -> Answer | None:
        """A live cached answer, or None. Safe from any thread."""
        return self.cache.get((_normalize(name), rdtype.upper()))

    async def query(
        self, name: str | bytes, rdtype: str, *, timeout: float | None = None
    ) -> Answer:
        """Resolve ``name``/``rdtype`` through the cache. Raises :class:`DnsTempError`."""
        self._loop = asyncio.get_running_loop()
        qname = _normalize(name)
        qtype = rdtype.upper()
        key = (qname, qtype)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        pending = self._inflight.get(key)
        if pending is not None and pending.get_loop() is self._loop:
            return await asyncio.shield(pending)
        fut: asyncio.Future[Answer] = self._loop.create_future()
        self._inflight[key] = fut
        try:
            answer, ttl = await self._fetch(qname, qtype, timeout or self.timeout)
        except BaseException as exc:
            if not fut.done():
                fut.set_exception(exc if isinstance(exc, DnsTempError) else DnsTempError(str(exc)))
                fut.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            self._inflight.pop(key, None)
        self.cache.put(key, answer, ttl)
        fut.set_result(answer)
        return answer

    async def _fetch(self, qname: str, qtype: str, timeout: float) -> tuple[Answer, float]:
        if not self._resolver.nameservers:
            raise DnsTempError("no nameservers configured")
        labels = qname.split(".")
        if not qname or any(not 0 < len(label) < 64 for label in labels) or len(qname) > 253:
            # Not a name DNS can carry (RFC 1035 section 2.3.4): it cannot exist.
            return Answer(qname, qtype, "NXDOMAIN"), DEFAULT_NEGATIVE_TTL
        rdtype = dns.rdatatype.from_text(qtype)
        try:
            ans = await self._resolver.resolve(
                qname,
                rdtype,
                raise_on_no_answer=False,
                lifetime=timeout,
                search=False,
            )
        except dns.resolver.NXDOMAIN as exc:
            responses: dict[Any, Any] = exc.responses()  # type: ignore[no-untyped-call]
            resp = next(iter(responses.values()), None) if responses else None
            records = self._records(resp, qtype) if resp is not None else ()
            return Answer(qname, qtype, "NXDOMAIN", records), _negative_ttl(resp)
        except dns.resolver.LifetimeTimeout:
            raise DnsTempError(f"DNS timeout for {qname} {qtype}") from None
        except dns.exception.Timeout:
            raise DnsTempError(f"DNS timeout for {qname} {qtype}") from None
        except dns.resolver.NoNameservers as exc:
            raise DnsTempError(f"DNS server failure for {qname} {qtype} (SERVFAIL/REFUSED)") from (
                exc
            )
        except (dns.name.EmptyLabel, dns.name.LabelTooLong, dns.name.NameTooLong):
            return Answer(qname, qtype, "NXDOMAIN"), DEFAULT_NEGATIVE_TTL
        except dns.exception.DNSException as exc:
            raise DnsTempError(f"DNS error for {qname} {qtype}: {exc}") from None
        except OSError as exc:
            raise DnsTempError(f"DNS unreachable for {qname} {qtype}: {exc}") from None
        resp = ans.response
        records = self._records(resp, qtype)
        if any(r.rdtype == qtype for r in records):
            ttl = float(min(rrset.ttl for rrset in resp.answer)) if resp.answer else 0.0
            ttl = min(ttl, MAX_TTL)
        else:
            ttl = _negative_ttl(resp)
        return Answer(qname, qtype, "NOERROR", records), ttl

    @staticmethod
    def _records(resp: dns.message.Message, qtype: str) -> tuple[Record, ...]:
        out: list[Record] = []
        for rrset in resp.answer:
            rtype = dns.rdatatype.to_text(rrset.rdtype)
            if rtype not in (qtype, "CNAME"):
                continue
            owner = _name_text(rrset.name)
            for rdata in rrset:
                out.append(Record(owner, rtype, _rdata_value(rtype, rdata)))
        return tuple(out)

    async def txt(self, name: str, *, timeout: float | None = None) -> list[bytes]:
        """TXT records at ``name`` (CNAMEs followed), each with its strings joined.

        RFC 7208 section 3.3 / RFC 6376 section 3.6.2.2: a record's character-strings are
        concatenated without separators.
        """
        current = _normalize(name)
        for _ in range(MAX_CNAME_CHAIN):
            answer = await self.query(current, "TXT", timeout=timeout)
            values = answer.values()
            if values or answer.rcode == "NXDOMAIN":
                return [b"".join(v) for v in values]
            target = answer.cname()
            if target is None:
                return []
            current = target
        raise DnsTempError(f"CNAME chain too long at {name}")

    def bridge(self, deadline: Deadline, *, cache_only: bool = False) -> SyncBridge:
        """Sync access for a worker thread, bounded by ``deadline``.

        ``cache_only`` makes a bridge usable on the event loop thread itself: it never waits,
        it raises :class:`CacheMiss` for anything not cached.
        """
        self._loop = asyncio.get_running_loop()  # the loop the bridge's misses run on
        return SyncBridge(self, self._loop, deadline, cache_only=cache_only)

    async def close(self) -> None:
        for fut in self._inflight.values():
            fut.cancel()
        self._inflight.clear()


class SyncBridge:
    """Blocking lookups for pyspf/dkimpy in a worker thread, served by the async resolver.

    Cache hits never leave the thread. Misses run on the resolver's event loop and are waited
    for at most the remaining budget; when the budget is gone every further lookup fails fast
    with :class:`DnsTempError`, so an abandoned thread finishes quickly.
    """

    def __init__(
        self,
        resolver: Resolver,
        loop: asyncio.AbstractEventLoop,
        deadline: Deadline,
        *,
        cache_only: bool = False,
    ):
        self.resolver = resolver
        self.loop = loop
        self.deadline = deadline
        self.cache_only = cache_only
        self.missed = False
        self.lookups: list[tuple[str, str, str]] = []  # (name, type, outcome) for reasons/debug

    def query(self, name: str | bytes, rdtype: str) -> Answer:
        hit = self.resolver.cached(name, rdtype)
        if hit is not None:
            self.lookups.append((_normalize(name), rdtype, hit.rcode))
            return hit
        if self.cache_only:
            self.missed = True
            raise CacheMiss(f"{_normalize(name)} {rdtype}")
        left = self.deadline.check()
        timeout = min(self.resolver.timeout, left)
        fut = asyncio.run_coroutine_threadsafe(
            self.resolver.query(name, rdtype, timeout=timeout), self.loop
        )
        try:
            answer = fut.result(timeout=left)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise DnsTempError(f"DNS budget of {self.deadline.seconds:g}s exhausted") from None
        except concurrent.futures.CancelledError:
            raise DnsTempError("DNS lookup cancelled") from None
        self.lookups.append((_normalize(name), rdtype, answer.rcode))
        return answer

    # ------------------------------------------------------------------ pyspf adapter

    def spf_lookup(
        self, name: str, qtype: str, strict: Any = True, timeout: Any = None
    ) -> list[tuple[tuple[str, str], Any]]:
        """pyspf's ``DNSLookup(name, qtype, strict, timeout)`` contract.

        Returns ``[((owner, type), value), ...]`` like pyspf's own drivers, CNAMEs included so
        pyspf follows and counts them itself. ``DnsTempError`` propagates; ``spf.py`` binds this
        function so that it is re-raised as ``spf.TempError``.
        """
        answer = self.query(name, qtype)
        return [((r.owner, r.rdtype), r.value) for r in answer.records]

    # ------------------------------------------------------------------ dkimpy adapter

    def dkim_txt(self, name: bytes | str, timeout: float = 5) -> bytes | None:
        """dkimpy's ``dnsfunc(name, timeout=...)``: the key record's TXT, or None if absent.

        CNAMEs are followed (selectors delegated to an ESP are commonly CNAMEs). When several
        TXT records exist the one that looks like a key (has ``p=``) wins.
        """
        current = _normalize(name)
        for _ in range(MAX_CNAME_CHAIN):
            answer = self.query(current, "TXT")
            values = [b"".join(v) for v in answer.values()]
            if values:
                return pick_key_record(values)
            target = answer.cname()
            if answer.rcode == "NXDOMAIN" or target is None:
                return None
            current = target
        return None
