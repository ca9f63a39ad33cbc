"""Content-scanning benchmark: delivered msgs/s with rspamd + clamd on vs both off, same run.

Starts a clamd (the repo's test-only signatures) and an offline rspamd (see tests/support/),
then two ``mailgate serve`` instances that differ only in ``[spam]``/``[antivirus]``. Each is
loaded with Postfix's ``smtp-source`` (20 sessions, 4 KB and 100 KB) and timed until its
worker has processed the whole backlog (*delivered*: processed, i.e. handed to the outbox).
Then the latency each engine adds per message: the client alone on the same sizes, one call
at a time (median, p95).

    python bench/scan_bench.py             # ~1-2 minutes (plus rspamd's first start, ~10-30 s)
    python bench/scan_bench.py --quick

Needs smtp-source (Debian ``postfix``), clamd (``clamav-daemon``) and ``rspamd``.
Loopback only; every run is bounded by a count and a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.smtp_bench import free_port, smtp_source, wait_port  # noqa: E402
from tests.support.clamd import Clamd  # noqa: E402
from tests.support.rspamd import Rspamd  # noqa: E402

from mailgate.config import AntivirusConfig, SpamConfig  # noqa: E402
from mailgate.scanners.clamd import ClamdClient  # noqa: E402
from mailgate.scanners.rspamd import MessageFacts, RspamdClient  # noqa: E402

TIMEOUT = 300


def group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of one process group."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:  # pgrp; fields[11:13] are utime, stime
            total += int(fields[11]) + int(fields[12])
    return total / tick


class Mailgate:
    def __init__(self, root: Path, engines: str) -> None:
        self.dir = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        cfg = root / "mailgate.toml"
        cfg.write_text(
            f'[smtp]\nlisten = "127.0.0.1:{self.port}"\nhostname = "mx.bench"\n'
            'max_message_size = "25MB"\n'
            "max_connections_per_ip = 1000\nmax_messages_per_ip_per_minute = 0\n"
            f'[store]\ndata_dir = "{root / "data"}"\n'
            '[[domains]]\nname = "example.test"\nmailboxes = ["support"]\n'
            "[auth]\nenabled = false\n"
            '[api]\nenabled = false\n[ingest]\nworkers = 1\n[log]\nlevel = "warning"\n' + engines
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailgate.cli", "serve", "--config", str(cfg)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_port(self.port)
        self.db = root / "data" / "mailgate.sqlite"

    def counts(self) -> tuple[int, int, int]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            total, done, processed = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(state != 'spooled'), 0),"
                " COALESCE(SUM(state = 'processed'), 0) FROM messages"
            ).fetchone()
        finally:
            conn.close()
        return int(total), int(done), int(processed)

    def run(self, size: int, count: int, sessions: int) -> float:
        """Delivered msgs/s: from the first connection until the worker processed them all."""
        _, before_done, before_ok = self.counts()
        t0 = time.perf_counter()
        smtp_source(self.port, size, count, sessions)
        deadline = time.monotonic() + TIMEOUT
        done = ok = 0
        while time.monotonic() < deadline:
            _, done, ok = self.counts()
            if done - before_done >= count:
                break
            time.sleep(0.02)
        elapsed = time.perf_counter() - t0
        assert done - before_done >= count, f"only {done - before_done} of {count} processed"
        assert ok - before_ok == count, f"{count - (ok - before_ok)} not delivered (held/failed)"
        return count / elapsed

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=60)


def message(size: int) -> bytes:
    head = (
        b"From: bench@example.org\r\nTo: support@example.test\r\nSubject: bench\r\n"
        b"Message-ID: <bench@example.org>\r\n\r\n"
    )
    line = b"La de da de da 1 2 3 4 5 6 7 8 9 0 the quick brown fox jumps over it\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


async def engine_latency(clamd: Clamd, rspamd: Rspamd, size: int, n: int) -> dict[str, float]:
    raw = message(size)
    av = ClamdClient(AntivirusConfig(engine="clamav", address=clamd.address, timeout=10))
    spam = RspamdClient(SpamConfig(engine="rspamd", url=rspamd.url, timeout=10))
    facts = MessageFacts(client_ip="127.0.0.1", mail_from="bench@example.org")
    out: dict[str, float] = {}
    try:
        for name, call in (
            ("clamd", lambda: av.scan(raw)),
            ("rspamd", lambda: spam.check(raw, facts)),
        ):
            times = []
            await call()  # warm the connection pool
            for _ in range(n):
                t = time.perf_counter()
                await call()
                times.append(time.perf_counter() - t)
            times.sort()
            out[f"{name}_p50_ms"] = round(statistics.median(times) * 1000, 2)
            out[f"{name}_p95_ms"] = round(times[int(len(times) * 0.95) - 1] * 1000, 2)
    finally:
        await spam.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="smaller counts")
    ap.add_argument("--repeat", type=int, default=3, help="runs per cell; the median is printed")
    args = ap.parse_args()
    counts = {4096: 500 if args.quick else 1500, 102400: 150 if args.quick else 400}
    sessions = 20
    root = Path(tempfile.mkdtemp(prefix="mailgate-scan-bench-"))
    clamd = Clamd(root / "clamd", stream_max="25M")
    # rspamd's compiled hyperscan databases are kept between runs (the first start takes ~20 s)
    cache = Path(tempfile.gettempdir()) / "mailgate-bench-rspamd-db"
    cache.mkdir(exist_ok=True)
    rspamd = Rspamd(root / "rspamd", cache)
    servers: list[Mailgate] = []
    results = []
    try:
        clamd.start()
        t = time.perf_counter()
        rspamd.start()
        print(f"rspamd ready in {time.perf_counter() - t:.1f}s (hyperscan compile)", flush=True)
        engines = (
            f'[spam]\nengine = "rspamd"\nurl = "{rspamd.url}"\n'
            f'[antivirus]\nengine = "clamav"\naddress = "{clamd.address}"\n'
        )
        off = Mailgate(root / "off", "")
        servers.append(off)
        on = Mailgate(root / "on", engines)
        servers.append(on)
        for size in (4096, 102400):
            n = counts[size]
            off_runs, on_runs = [], []
            cpu = dict.fromkeys(("off", "on", "clamd", "rspamd"), 0.0)
            groups = {
                "off": off.proc.pid,
                "on": on.proc.pid,
                "clamd": clamd.daemon.pid,
                "rspamd": rspamd.daemon.pid,
            }
            for _ in range(args.repeat):
                before = {k: group_cpu(pid) for k, pid in groups.items()}
                off_runs.append(off.run(size, n, sessions))
                mid = {k: group_cpu(pid) for k, pid in groups.items()}
                on_runs.append(on.run(size, n, sessions))
                after = {k: group_cpu(pid) for k, pid in groups.items()}
                cpu["off"] += mid["off"] - before["off"]
                for k in ("on", "clamd", "rspamd"):
                    cpu[k] += after[k] - mid[k]
            per_msg = {
                f"cpu_ms_{k}": round(v * 1000 / (n * args.repeat), 2) for k, v in cpu.items()
            }
            a, b = statistics.median(off_runs), statistics.median(on_runs)
            lat = asyncio.run(engine_latency(clamd, rspamd, size, 200 if args.quick else 500))
            results.append(
                {
                    "size": size,
                    "sessions": sessions,
                    "messages": n,
                    "engines_off": round(a, 1),
                    "engines_on": round(b, 1),
                    "ratio": round(b / a, 2),
                    **per_msg,
                    **lat,
                }
            )
            print(
                f"{size // 1024:>4} KB x{sessions} delivered: off {a:7.1f}/s | on {b:7.1f}/s "
                f"({b / a:.2f}x) | clamd p50 {lat['clamd_p50_ms']} ms, rspamd p50 "
                f"{lat['rspamd_p50_ms']} ms | CPU/msg mailgate off {per_msg['cpu_ms_off']} ms,"
                f" on {per_msg['cpu_ms_on']} ms, clamd {per_msg['cpu_ms_clamd']} ms,"
                f" rspamd {per_msg['cpu_ms_rspamd']} ms",
                flush=True,
            )
    finally:
        for srv in servers:
            srv.stop()
        rspamd.stop()
        clamd.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({"repeat": args.repeat, "results": results}, indent=2))


if __name__ == "__main__":
    main()
