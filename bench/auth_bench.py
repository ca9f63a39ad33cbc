"""Sender-authentication cost: ``mailgate serve`` with auth enabled vs disabled, in one run.

Both sides run the same real server (subprocess, from ``tests/support/server.py``) and the same
load: ``--sessions`` concurrent SMTP clients (aiosmtplib), one connection per message (the MX
case), DKIM-signed (RSA 2048) ~4 KB messages whose sender passes SPF, DKIM and DMARC. The auth
side resolves through the loopback test DNS server (``tests/support/dns_server.py``); its cache
is warmed before timing, so the figure is the steady-state cost of SPF + DKIM + ARC + DMARC.

Prints, per side and round, msgs/s (all 250s received) and the CPU seconds the server's whole
process tree (front, pipeline worker) spent per message (until the pipeline has processed them
all), then the medians: the throughput ratio auth/no-auth (target >= 0.8), the CPU-bound ratio
(no-auth CPU / auth CPU: what the throughput ratio is when the host is CPU-bound, and much
less sensitive to other load on a shared machine), and the server's own mean
``mailgate_auth_seconds`` (auth latency per message).

    python bench/auth_bench.py                      # 20 sessions, 600 msgs per side, 2 rounds
    python bench/auth_bench.py --count 300 --rounds 1

Loopback only; every run is bounded by a message count and a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiosmtplib  # noqa: E402
from tests.support.dkim_keys import rsa_key  # noqa: E402
from tests.support.dns_server import DnsTestServer  # noqa: E402
from tests.support.server import MailgateServer  # noqa: E402

TIMEOUT = 600.0
SENDER = "billing@example.com"


def make_messages(n: int, size: int) -> list[bytes]:
    key = rsa_key()
    line = "Your invoice for order 4711 is attached as text; thank you for your business.\r\n"
    body = line * max(1, size // len(line))
    out = []
    for i in range(n):
        msg = (
            f"From: Example Billing <{SENDER}>\r\n"
            "To: support@example.test\r\n"
            f"Subject: Invoice {i}\r\n"
            f"Message-ID: <bench-{i}@example.com>\r\n"
            "Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "\r\n" + body
        ).encode()
        out.append(key.sign(msg, "bench", "example.com"))
    return out


def publish_zone(dns: DnsTestServer) -> None:
    rsa_key().publish(dns, "bench", "example.com")
    dns.add_txt("example.com", "v=spf1 ip4:127.0.0.1 -all")
    dns.add_txt("_dmarc.example.com", "v=DMARC1; p=reject; rua=mailto:dmarc@example.com")


async def load(srv: MailgateServer, messages: list[bytes], count: int, sessions: int) -> float:
    """Send ``count`` messages over ``sessions`` concurrent clients; returns msgs/s."""
    next_index = 0
    failures: list[str] = []

    async def client() -> None:
        nonlocal next_index
        while next_index < count:
            i = next_index
            next_index += 1
            smtp = aiosmtplib.SMTP(
                hostname=srv.smtp_host, port=srv.smtp_port, local_hostname="mail.example.com"
            )
            await smtp.connect()
            try:
                await smtp.sendmail(SENDER, ["support@example.test"], messages[i % len(messages)])
            except aiosmtplib.SMTPException as exc:
                failures.append(str(exc))
            finally:
                await smtp.quit()

    started = time.perf_counter()
    async with asyncio.timeout(TIMEOUT):
        await asyncio.gather(*(client() for _ in range(sessions)))
    elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{len(failures)} messages refused, first: {failures[0]}")
    return count / elapsed


def auth_seconds(srv: MailgateServer) -> tuple[float, float]:
    """(sum, count) of the server's mailgate_auth_seconds histogram, from /metrics."""
    if not srv.api_base:
        return 0.0, 0.0
    try:
        with urllib.request.urlopen(f"{srv.api_base}/metrics", timeout=10) as resp:
            text = resp.read().decode()
    except OSError:
        return 0.0, 0.0
    total = re.search(r"^mailgate_auth_seconds_sum\s+(\S+)", text, re.M)
    n = re.search(r"^mailgate_auth_seconds_count\s+(\S+)", text, re.M)
    return (float(total.group(1)) if total else 0.0, float(n.group(1)) if n else 0.0)


def tree_cpu(root: int) -> float:
    """CPU seconds (user+system) of a process and its children, from /proc (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = {root}
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    changed = True
    while changed:  # the server's whole process tree (front, workers, pools)
        changed = False
        for pid, (ppid, _) in stats.items():
            if ppid in pids and pid not in pids:
                pids.add(pid)
                changed = True
    for pid in pids:
        if pid in stats:
            total += stats[pid][1]
    return total


async def one_side(
    tmp: Path, name: str, auth_extra: str | None, messages: list[bytes], args: argparse.Namespace
) -> tuple[float, float | None, float]:
    sub = tmp / name
    sub.mkdir()
    srv = MailgateServer(
        sub, auth=auth_extra is not None, auth_extra=auth_extra or "", max_size="1MB"
    )
    srv.start()
    try:
        await load(srv, messages, min(len(messages), 40), args.sessions)  # warm-up, cache warm
        before = auth_seconds(srv)
        assert srv.proc is not None
        cpu0 = tree_cpu(srv.proc.pid)
        rate = await load(srv, messages, args.count, args.sessions)
        srv.wait_processed(args.count + min(len(messages), 40), timeout=TIMEOUT)
        cpu = (tree_cpu(srv.proc.pid) - cpu0) / args.count
        after = auth_seconds(srv)
    finally:
        srv.stop()
    n = after[1] - before[1]
    mean_auth = (after[0] - before[0]) / n if n else None
    return rate, mean_auth, cpu


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--count", type=int, default=600, help="messages per side per round")
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--size", type=int, default=4096, help="approximate body bytes")
    ap.add_argument(
        "--verify-processes",
        type=int,
        default=None,
        help="[auth] verify_processes for the auth side (default: the config default)",
    )
    args = ap.parse_args()

    print(f"signing {min(args.count, 100)} messages (RSA 2048, dkimpy)...", flush=True)
    messages = make_messages(min(args.count, 100), args.size)
    off_rates: list[float] = []
    on_rates: list[float] = []
    auth_means: list[float] = []
    ratios: list[float] = []
    off_cpus: list[float] = []
    on_cpus: list[float] = []
    with DnsTestServer() as dns, tempfile.TemporaryDirectory(prefix="auth-bench-") as tmpdir:
        publish_zone(dns)
        auth_extra = f'nameservers = ["{dns.address}"]\ntimeout = "1s"\nbudget = "8s"'
        if args.verify_processes is not None:
            auth_extra += f"\nverify_processes = {args.verify_processes}"
        tmp = Path(tmpdir)
        for r in range(args.rounds):
            off, _, off_cpu = await one_side(tmp, f"off{r}", None, messages, args)
            on, mean, on_cpu = await one_side(tmp, f"on{r}", auth_extra, messages, args)
            off_rates.append(off)
            on_rates.append(on)
            ratios.append(on / off)
            off_cpus.append(off_cpu)
            on_cpus.append(on_cpu)
            if mean is not None:
                auth_means.append(mean)
            print(
                f"round {r + 1}: auth disabled {off:6.1f} msgs/s {off_cpu * 1000:5.2f} ms CPU/msg"
                f" | auth enabled {on:6.1f} msgs/s {on_cpu * 1000:5.2f} ms CPU/msg"
                f" | ratio {on / off:.2f}"
                + (f" | auth latency {mean * 1000:.1f} ms" if mean is not None else ""),
                flush=True,
            )
    off_m, on_m = statistics.median(off_rates), statistics.median(on_rates)
    ratio = statistics.median(ratios)
    off_c, on_c = statistics.median(off_cpus), statistics.median(on_cpus)
    print(
        f"\nsessions={args.sessions} count={args.count} size~{args.size}B rounds={args.rounds}"
        f" cpus={os.cpu_count()}\n"
        f"throughput (median): auth disabled {off_m:.1f} msgs/s, auth enabled {on_m:.1f} msgs/s;"
        f" ratio (median of rounds) {ratio:.2f} (target >= 0.80: {'met' if ratio >= 0.8 else 'NOT met'})\n"
        f"server CPU per message (whole process tree, median): {off_c * 1000:.2f} ms disabled,"
        f" {on_c * 1000:.2f} ms enabled -> auth adds {(on_c - off_c) * 1000:.2f} ms;"
        f" CPU-bound throughput ratio {off_c / on_c:.2f}"
        + (
            f"\nauth latency per message inside the server (warm cache, median):"
            f" {statistics.median(auth_means) * 1000:.1f} ms"
            if auth_means
            else ""
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
