"""Connection economics: who gets a connection slot, a DATA slot, and the benefit of the doubt.

A slot is cheap to take and expensive to hold: a slowloris client that reaches DATA and sends a
byte every few seconds holds one for as long as it likes unless something takes it back. The
deadlines live in ``session.py``; this module owns the bookkeeping they rely on:

* ``ConnectionCounter`` counts open sessions in all, per IP and per network (/24 for IPv4, /64
  for IPv6: one host of an attacker rarely has one address, but usually has one network), and
  sessions in DATA per network (Postfix ``anvil`` and Haraka's ``limit`` plugin count the same
  things). The last ``reserved`` slots of ``max_total`` only go to clients with a clean history,
  so a flood of unknown clients cannot lock out the correspondents the server already knows.
* ``PeerHistory`` remembers, per IP and for ``ttl``, a completed delivery (a clean history) and
  a passed pregreet test (postscreen's ``postscreen_greet_ttl``). Both are earned by behaving,
  neither by asking; memory is bounded (least recently seen IPs are forgotten first).

Limits are passed in (``ConnectionLimits``) rather than stored, so that after a reload a session
in progress is judged by the limits it started with while the counts stay shared.
"""

from __future__ import annotations

import functools
import ipaddress
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from mailgate.config import SmtpConfig


@dataclass(frozen=True)
class ConnectionLimits:
    """0 means no limit (for each count)."""

    max_total: int = 0
    max_per_ip: int = 0
    max_per_network: int = 0
    reserved: int = 0
    max_data_per_network: int = 0
    stress_idle: float = 0.0
    """Under stress (``STRESS_SHARE`` of ``max_total`` open), idle sessions are cut after this."""

    @classmethod
    def from_config(cls, cfg: SmtpConfig) -> ConnectionLimits:
        return cls(
            max_total=cfg.max_connections,
            max_per_ip=cfg.max_connections_per_ip,
            max_per_network=cfg.max_connections_per_network,
            reserved=cfg.reserved_connections,
            max_data_per_network=cfg.max_data_per_network,
            stress_idle=cfg.stress_idle_timeout,
        )


def network_of(ip: str) -> str:
    """The network a client is counted in: ``a.b.c.0/24``, ``x:x:x:x::/64``, else the string.

    An IPv4-mapped IPv6 address counts as its IPv4 address (a dual-stack listener).
    """
    if ip.count(".") == 3 and ip.replace(".", "").isdigit():
        return ip.rpartition(".")[0] + ".0/24"  # the common case, without ipaddress (~20x faster)
    return _network_of(ip)


@functools.lru_cache(maxsize=4096)
def _network_of(ip: str) -> str:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        else:
            return str(ipaddress.IPv6Network((int(addr) >> 64 << 64, 64)))
    return str(ipaddress.IPv4Network((int(addr) >> 8 << 8, 24)))


def _inc(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


def _dec(counts: dict[str, int], key: str) -> None:
    n = counts.get(key, 0) - 1
    if n <= 0:
        counts.pop(key, None)
    else:
        counts[key] = n


class Idler(Protocol):
    """A live session as the stress sweep sees it."""

    def idle_for(self, now: float) -> float:
        """Seconds since its last command or data (0 while in DATA: the DATA deadlines rule)."""
        ...

    def cut_idle(self) -> None: ...


STRESS_SHARE = 0.8
"""Open sessions, as a share of ``max_total``, from which the server is under stress."""
SWEEP_INTERVAL = 1.0
STRESS_PENALTY = 6
MAX_PENALIZED = 100_000


class ConnectionCounter:
    """Open sessions (in all, per IP, per network) and sessions in DATA per network.

    Under stress — most slots taken, as by a connect-and-hold flood — a new connection makes the
    counter cut the sessions idle for ``stress_idle`` (Postfix's ``smtpd_timeout =
    ${stress?10s}``): a holder that sends nothing gives its slot back in seconds instead of
    ``idle_timeout``, so first-time senders still find free slots.
    """

    def __init__(self) -> None:
        self.total = 0
        self.per_ip: dict[str, int] = {}
        self.per_network: dict[str, int] = {}
        self.data_per_network: dict[str, int] = {}
        self.live: set[Idler] = set()
        self._last_sweep = -SWEEP_INTERVAL
        self.penalized: OrderedDict[str, float] = OrderedDict()
        """IP -> until when it may not reopen a slot under stress (it held one idle)."""

    def penalize(self, ip: str, limits: ConnectionLimits, now: float | None = None) -> None:
        """``ip`` held a slot idle under stress: while the stress lasts it gets no new slot for
        ``STRESS_PENALTY`` × ``stress_idle`` (a flood's holders reconnect at once, and would
        otherwise win every freed slot before a real sender's next attempt)."""
        now = time.monotonic() if now is None else now
        self.penalized[ip] = now + STRESS_PENALTY * limits.stress_idle
        self.penalized.move_to_end(ip)
        while len(self.penalized) > MAX_PENALIZED:
            self.penalized.popitem(last=False)

    def is_penalized(self, ip: str, now: float | None = None) -> bool:
        until = self.penalized.get(ip)
        if until is None:
            return False
        if (time.monotonic() if now is None else now) >= until:
            del self.penalized[ip]
            return False
        return True

    def under_stress(self, limits: ConnectionLimits) -> bool:
        return bool(limits.max_total) and self.total >= STRESS_SHARE * limits.max_total

    def relieve(self, limits: ConnectionLimits, now: float | None = None) -> int:
        """Cut the sessions idle for ``limits.stress_idle`` when under stress (at most once a
        second); how many were cut."""
        if not limits.stress_idle or not self.under_stress(limits):
            return 0
        now = time.monotonic() if now is None else now
        if now - self._last_sweep < SWEEP_INTERVAL:
            return 0
        self._last_sweep = now
        idle = [s for s in self.live if s.idle_for(now) >= limits.stress_idle]
        for session in idle:
            session.cut_idle()
        return len(idle)

    def try_open(self, ip: str, limits: ConnectionLimits, *, clean: bool = False) -> str | None:
        """None when admitted (and counted), else the limit that was hit:
        "total", "reserved" (only slots for clean clients are left), "stress" (it held a slot
        idle under stress, see `penalize`), "per-ip", "per-network"."""
        self.relieve(limits)
        if not clean and self.under_stress(limits) and self.is_penalized(ip):
            return "stress"
        if limits.max_total and self.total >= limits.max_total:
            return "total"
        if (
            not clean
            and limits.max_total
            and limits.reserved
            and self.total >= limits.max_total - limits.reserved
        ):
            return "reserved"
        if limits.max_per_ip and self.per_ip.get(ip, 0) >= limits.max_per_ip:
            return "per-ip"
        net = network_of(ip)
        if limits.max_per_network and self.per_network.get(net, 0) >= limits.max_per_network:
            return "per-network"
        self.total += 1
        _inc(self.per_ip, ip)
        _inc(self.per_network, net)
        return None

    def close(self, ip: str) -> None:
        self.total = max(0, self.total - 1)
        _dec(self.per_ip, ip)
        _dec(self.per_network, network_of(ip))

    def try_enter_data(self, ip: str, limits: ConnectionLimits) -> bool:
        net = network_of(ip)
        if (
            limits.max_data_per_network
            and self.data_per_network.get(net, 0) >= limits.max_data_per_network
        ):
            return False
        _inc(self.data_per_network, net)
        return True

    def leave_data(self, ip: str) -> None:
        _dec(self.data_per_network, network_of(ip))


class PeerHistory:
    """Per IP: when it last completed a delivery, and when it last passed the pregreet test."""

    def __init__(self, ttl: float, max_ips: int = 100_000) -> None:
        self.ttl = ttl
        self.max_ips = max_ips
        # ip -> [last delivery, last pregreet pass] (monotonic seconds; 0: never)
        self._seen: OrderedDict[str, list[float]] = OrderedDict()

    def _entry(self, ip: str) -> list[float]:
        e = self._seen.get(ip)
        if e is None:
            e = self._seen[ip] = [0.0, 0.0]
            while len(self._seen) > self.max_ips:
                self._seen.popitem(last=False)
        else:
            self._seen.move_to_end(ip)
        return e

    def _fresh(self, ip: str, which: int, now: float | None) -> bool:
        e = self._seen.get(ip)
        if e is None or not e[which]:
            return False
        now = time.monotonic() if now is None else now
        return now - e[which] <= self.ttl

    def delivered(self, ip: str, now: float | None = None) -> None:
        self._entry(ip)[0] = time.monotonic() if now is None else now

    def passed_greeting(self, ip: str, now: float | None = None) -> None:
        self._entry(ip)[1] = time.monotonic() if now is None else now

    def is_clean(self, ip: str, now: float | None = None) -> bool:
        """Completed a delivery within ``ttl``: may use the reserved slots, skips the wait."""
        return self._fresh(ip, 0, now)

    def skips_greet_delay(self, ip: str, now: float | None = None) -> bool:
        return self._fresh(ip, 0, now) or self._fresh(ip, 1, now)
