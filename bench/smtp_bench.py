"""SMTP acceptance benchmark: mailgate serve vs a bare aiosmtpd server, in one run.

Loads each server with Postfix's ``smtp-source`` (one connection per message, the MX case) at
4 KB and 100 KB, 1 and 20 sessions, and prints msgs/s and mailgate's ratio to the bare server.
For mailgate it prints two figures: *accepted* (smtp-source's wall time: every message got its
250 after the spool commit) and *sustained* (until the worker has processed the whole backlog).

    python bench/smtp_bench.py                 # default counts; ~2-4 minutes
    python bench/smtp_bench.py --quick         # smaller counts
    python bench/smtp_bench.py --durability fsync --workers 1

Needs smtp-source (Debian package ``postfix``; its daemon is not started). Loopback only;
every run is bounded by a count and a timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TIMEOUT = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:  # > greet_delay
                s.recv(100)
                s.sendall(b"QUIT\r\n")
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


def smtp_source(port: int, size: int, count: int, sessions: int) -> float:
    src = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    if not os.path.exists(src):
        sys.exit("smtp-source not found: apt-get install postfix (see bench/README.md)")
    t0 = time.perf_counter()
    subprocess.run(
        [
            src,
            "-l",
            str(size),
            "-m",
            str(count),
            "-s",
            str(sessions),
            "-f",
            "from@example.org",
            "-t",
            "support@example.test",
            f"127.0.0.1:{port}",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=TIMEOUT,
    )
    return time.perf_counter() - t0


class Reference:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "reference_null.py"), "--listen", f"127.0.0.1:{self.port}"],
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)

    def run(self, size: int, count: int, sessions: int) -> dict[str, float]:
        return {"accepted": count / smtp_source(self.port, size, count, sessions)}

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


class Mailgate:
    def __init__(self, durability: str, workers: int, auth: bool) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mailgate-bench-"))
        self.port = free_port()
        cfg = self.dir / "mailgate.toml"
        cfg.write_text(
            f'[smtp]\nlisten = "127.0.0.1:{self.port}"\nhostname = "mx.bench"\nmax_message_size = "25MB"\n'
            f"max_connections_per_ip = 1000\nmax_messages_per_ip_per_minute = 0\n"
            f'[store]\ndata_dir = "{self.dir / "data"}"\ndurability = "{durability}"\n'
            f'[[domains]]\nname = "example.test"\nmailboxes = ["support"]\n'
            f"[auth]\nenabled = {'true' if auth else 'false'}\n"
            f'[api]\nenabled = false\n[ingest]\nworkers = {workers}\n[log]\nlevel = "warning"\n'
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailgate.cli", "serve", "--config", str(cfg)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_port(self.port)
        self.db = self.dir / "data" / "mailgate.sqlite"

    def counts(self) -> tuple[int, int]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            total, done = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(state != 'spooled'), 0) FROM messages"
            ).fetchone()
        finally:
            conn.close()
        return int(total), int(done)

    def run(self, size: int, count: int, sessions: int) -> dict[str, float]:
        before_total, before_done = self.counts()
        t0 = time.perf_counter()
        elapsed = smtp_source(self.port, size, count, sessions)
        total, _ = self.counts()
        assert total - before_total == count, f"stored {total - before_total} of {count}"
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            _, done = self.counts()
            if done - before_done >= count:
                break
            time.sleep(0.02)
        sustained = time.perf_counter() - t0
        return {"accepted": count / elapsed, "sustained": count / sustained}

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="smaller counts")
    ap.add_argument("--repeat", type=int, default=3, help="runs per cell; the median is printed")
    ap.add_argument("--durability", choices=["normal", "fsync"], default="normal")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--auth", action="store_true", help="keep sender authentication on")
    args = ap.parse_args()
    cells = [(4096, 1), (4096, 20), (102400, 1), (102400, 20)]
    counts = {4096: 600 if args.quick else 2000, 102400: 200 if args.quick else 600}
    ref, mg = Reference(), Mailgate(args.durability, args.workers, args.auth)
    results = []
    try:
        for size, sessions in cells:
            n = counts[size]
            r_runs, m_runs = [], []
            for _ in range(args.repeat):
                r_runs.append(ref.run(size, n, sessions))
                m_runs.append(mg.run(size, n, sessions))
            r = statistics.median(x["accepted"] for x in r_runs)
            a = statistics.median(x["accepted"] for x in m_runs)
            s = statistics.median(x["sustained"] for x in m_runs)
            results.append(
                {
                    "size": size,
                    "sessions": sessions,
                    "messages": n,
                    "bare_aiosmtpd": round(r, 1),
                    "mailgate_accepted": round(a, 1),
                    "mailgate_sustained": round(s, 1),
                    "accepted_ratio": round(a / r, 2),
                    "sustained_ratio": round(s / r, 2),
                }
            )
            print(
                f"{size // 1024:>4} KB x{sessions:<3} bare {r:7.1f}/s | mailgate accepted {a:7.1f}/s "
                f"({a / r:.2f}x) sustained {s:7.1f}/s ({s / r:.2f}x)",
                flush=True,
            )
    finally:
        ref.stop()
        mg.stop()
    print(
        json.dumps(
            {
                "durability": args.durability,
                "workers": args.workers,
                "repeat": args.repeat,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
