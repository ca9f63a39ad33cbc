"""Webhook delivery benchmark: accept-to-webhook latency and delivery vs SMTP accept throughput.

Runs a real ``mailgate serve`` (subprocess, SQLite in a temp dir, auth checks off) with one
webhook target: a local aiohttp receiver in this process that answers 200 at once and notes
when each event arrives. Messages go in over SMTP (aiosmtplib, one connection per message as
an MX sees them), each tagged in its Subject so the receiver can match it to its 250.

1. **steady**: ``--rate`` msgs/s for ``--duration`` seconds; prints p50/p95/p99 of the time
   from the client receiving 250 to the receiver getting the signed webhook
   (target: p95 < 50 ms at 100 msgs/s).
2. **burst**: ``--burst`` messages as fast as ``--concurrency`` SMTP clients can send them;
   prints the SMTP accept rate, the webhook delivery rate over the same window, and how long
   the outbox took to drain afterwards (target: delivery keeps up with acceptance).

    python bench/webhook_bench.py                  # ~1 minute
    python bench/webhook_bench.py --quick
    python bench/webhook_bench.py --rate 200 --duration 30 --workers 2

Loopback only; every phase is bounded by counts and timeouts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiosmtplib
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.server import MailgateServer  # noqa: E402

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BODY = "Hello,\r\n\r\nmy order 4721 has not arrived yet. Can you help?\r\n\r\nAlice\r\n" * 8


class Receiver:
    """Answers 200 at once; records arrival time per bench tag."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.count = 0
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.changed = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.perf_counter()
        self.count += 1
        subject = json.loads(body).get("subject") or ""
        tag = subject.rsplit(" ", 1)[-1]
        self.arrivals.setdefault(tag, now)
        self.changed.set()
        return web.Response(status=200)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def wait_all(self, tags: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not all(t in self.arrivals for t in tags):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = sum(1 for t in tags if t not in self.arrivals)
                raise TimeoutError(f"{missing} of {len(tags)} webhooks not received")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), min(remaining, 0.5))
            except TimeoutError:
                pass


def message(tag: str) -> bytes:
    return (
        "From: Alice <alice@example.org>\r\nTo: support@example.test\r\n"
        f"Subject: order question {tag}\r\nMessage-ID: <{tag}@bench.example.org>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n" + BODY
    ).encode()


async def send_one(host: str, port: int, tag: str) -> float:
    """One SMTP transaction; returns perf_counter() when the 250 for DATA arrived."""
    async with aiosmtplib.SMTP(hostname=host, port=port, timeout=30) as client:
        await client.sendmail("alice@example.org", ["support@example.test"], message(tag))
        return time.perf_counter()


def backlog(srv: MailgateServer) -> tuple[int, int]:
    """(messages spooled but not processed, webhook deliveries pending) right now."""
    with srv.db() as conn:
        spooled = conn.execute("SELECT COUNT(*) FROM messages WHERE state = 'spooled'").fetchone()
        pending = conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()
    return int(spooled[0]), int(pending[0])


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


async def steady(srv: MailgateServer, rx: Receiver, rate: float, duration: float) -> dict[str, Any]:
    n = int(rate * duration)
    accepted: dict[str, float] = {}
    t0 = time.perf_counter()

    async def one(i: int) -> None:
        tag = f"s{i}"
        accepted[tag] = await send_one(srv.smtp_host, srv.smtp_port, tag)

    tasks = []
    for i in range(n):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    sent_for = time.perf_counter() - t0
    tags = list(accepted)
    await rx.wait_all(tags, timeout=120)
    lat = [(rx.arrivals[t] - accepted[t]) * 1000 for t in tags]
    return {
        "messages": n,
        "offered_rate": rate,
        "achieved_rate": round(n / sent_for, 1),
        "p50_ms": round(pct(lat, 50), 1),
        "p95_ms": round(pct(lat, 95), 1),
        "p99_ms": round(pct(lat, 99), 1),
        "max_ms": round(max(lat), 1),
        "mean_ms": round(statistics.fmean(lat), 1),
    }


async def burst(srv: MailgateServer, rx: Receiver, count: int, concurrency: int) -> dict[str, Any]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)
    accepted: dict[str, float] = {}

    async def sender() -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            tag = f"b{i}"
            accepted[tag] = await send_one(srv.smtp_host, srv.smtp_port, tag)

    samples: list[tuple[int, int]] = []
    done = asyncio.Event()

    async def sample() -> None:
        # where a backlog builds: the spool (parse + pipeline) or the outbox (delivery)
        while not done.is_set():
            samples.append(await asyncio.to_thread(backlog, srv))
            try:
                await asyncio.wait_for(done.wait(), 0.2)
            except TimeoutError:
                pass

    sampler = asyncio.create_task(sample())
    t0 = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(concurrency)))
    t_accept = time.perf_counter() - t0
    delivered_during = sum(1 for t in accepted if rx.arrivals.get(t, float("inf")) <= t0 + t_accept)
    tags = list(accepted)
    await rx.wait_all(tags, timeout=300)
    t_all = max(rx.arrivals[t] for t in tags) - t0
    done.set()
    await sampler
    return {
        "messages": count,
        "concurrency": concurrency,
        "accept_rate": round(count / t_accept, 1),
        "delivered_while_accepting": delivered_during,
        "delivery_rate_overall": round(count / t_all, 1),
        "drain_after_accept_s": round(t_all - t_accept, 2),
        "max_spool_backlog": max((s for s, _ in samples), default=0),
        "max_outbox_pending": max((o for _, o in samples), default=0),
    }


async def drain(srv: MailgateServer, rx: Receiver, count: int, concurrency: int) -> dict[str, Any]:
    """Delivery capacity alone: queue ``count`` events with the target disabled, then enable it."""
    await asyncio.to_thread(srv.cli, "dlq", "disable-target", "bench")
    await asyncio.sleep(1.5)  # a running worker notices within [delivery] poll_interval
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def sender() -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await send_one(srv.smtp_host, srv.smtp_port, f"d{i}")

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    deadline = time.monotonic() + 300
    while await asyncio.to_thread(backlog, srv) != (0, count):
        if time.monotonic() > deadline:
            raise TimeoutError("the queued events did not all reach the outbox")
        await asyncio.sleep(0.1)
    await asyncio.to_thread(srv.cli, "dlq", "enable-target", "bench")
    tags = [f"d{i}" for i in range(count)]
    await rx.wait_all(tags, timeout=300)
    times = sorted(rx.arrivals[t] for t in tags)
    span = times[-1] - times[0]
    return {"events": count, "delivery_rate": round((count - 1) / span, 1) if span else None}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    rx = Receiver()
    await rx.start()
    tmp = Path(tempfile.mkdtemp(prefix="mailgate-webhook-bench-"))
    extra = (
        f'[[webhooks]]\nname = "bench"\nurl = "http://127.0.0.1:{rx.port}/hook"\n'
        f'secrets = ["{SECRET}"]\ntenant = "default"\nmax_concurrency = {args.target_concurrency}\n'
        '\n[delivery]\npoll_interval = "500ms"\n'
    )
    # all load comes from 127.0.0.1: lift the per-IP rate limit meant for the Internet
    srv = MailgateServer(
        tmp,
        extra_toml=extra,
        workers=args.workers,
        smtp_extra="max_messages_per_ip_per_minute = 10000000",
    )
    srv.config_path.write_text(
        srv.config_path.read_text().replace('level = "info"', 'level = "warning"')
    )
    await asyncio.to_thread(srv.start)
    try:
        # warm-up: connections, caches, the first webhook
        await send_one(srv.smtp_host, srv.smtp_port, "w0")
        await rx.wait_all(["w0"], timeout=60)
        results = {
            "steady": await steady(srv, rx, args.rate, args.duration),
            "burst": await burst(srv, rx, args.burst, args.concurrency),
            "drain": await drain(srv, rx, args.burst, args.concurrency),
            "workers": args.workers,
        }
    finally:
        await asyncio.to_thread(srv.stop)
        await rx.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100.0, help="steady msgs/s")
    parser.add_argument("--duration", type=float, default=20.0, help="steady seconds")
    parser.add_argument("--burst", type=int, default=2000, help="messages in the burst phase")
    parser.add_argument("--concurrency", type=int, default=20, help="SMTP clients in the burst")
    parser.add_argument("--target-concurrency", type=int, default=8, help="webhook max_concurrency")
    parser.add_argument("--workers", type=int, default=1, help="[ingest] workers")
    parser.add_argument("--quick", action="store_true", help="5 s steady, 500 burst")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.burst = 5.0, 500
    results = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    s, b, d = results["steady"], results["burst"], results["drain"]
    print(
        f"steady {s['messages']} msgs at {s['offered_rate']:g}/s (achieved {s['achieved_rate']}/s):"
    )
    print(
        f"  accept-to-webhook p50 {s['p50_ms']} ms  p95 {s['p95_ms']} ms  p99 {s['p99_ms']} ms"
        f"  max {s['max_ms']} ms"
    )
    print(f"burst {b['messages']} msgs, {b['concurrency']} SMTP clients:")
    print(
        f"  SMTP accepted {b['accept_rate']}/s; webhooks delivered {b['delivered_while_accepting']}"
        f" while accepting, {b['delivery_rate_overall']}/s overall;"
        f" all delivered {b['drain_after_accept_s']} s after the last 250"
    )
    print(
        f"  max backlog: spool (not yet parsed) {b['max_spool_backlog']},"
        f" outbox (processed, not yet delivered) {b['max_outbox_pending']}"
    )
    print(
        f"drain {d['events']} queued events (target disabled, then enabled):"
        f" {d['delivery_rate']} webhooks/s"
    )


if __name__ == "__main__":
    main()
