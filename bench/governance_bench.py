"""Data governance benchmark (issue 15): encryption at rest, purge and backup while serving.

Two ``mailgate serve`` instances that differ only in the encryption key
(``$MAILGATE_ENCRYPTION_KEY``) take the same loads from Postfix's ``smtp-source`` (20 sessions,
4 KB and 100 KB, interleaved runs, median), timed until the worker processed the whole backlog
(*delivered*, as in scan_bench.py). Then, on the unencrypted one: every message is back-dated
and ``mailgate purge --before`` removes them while a second smtp-source load runs (messages
purged per second). On the encrypted one: ``mailgate backup`` while a load runs (MB/s).

    python bench/governance_bench.py            # ~1-2 minutes
    python bench/governance_bench.py --quick

Needs smtp-source (Debian ``postfix``). Loopback only; every run is bounded.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.smtp_bench import free_port, smtp_source, wait_port  # noqa: E402

TIMEOUT = 300


class Mailgate:
    def __init__(self, root: Path, env: dict[str, str]) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = root / "mailgate.toml"
        self.config.write_text(
            f'[smtp]\nlisten = "127.0.0.1:{self.port}"\nhostname = "mx.bench"\n'
            'max_message_size = "25MB"\n'
            "max_connections_per_ip = 1000\nmax_messages_per_ip_per_minute = 0\n"
            f'[store]\ndata_dir = "{root / "data"}"\n'
            '[[domains]]\nname = "example.test"\nmailboxes = ["support"]\n'
            "[auth]\nenabled = false\n"
            '[api]\nenabled = false\n[ingest]\nworkers = 1\n[log]\nlevel = "warning"\n'
        )
        self.env = {**os.environ, **env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailgate.cli", "serve", "--config", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=self.env,
        )
        wait_port(self.port)
        self.db = root / "data" / "mailgate.sqlite"

    def counts(self) -> tuple[int, int]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            total, done = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(state != 'spooled'), 0) FROM messages"
            ).fetchone()
        finally:
            conn.close()
        return int(total), int(done)

    def last_seq(self) -> int:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            return int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM messages").fetchone()[0])
        finally:
            conn.close()

    def run(self, size: int, count: int, sessions: int) -> float:
        """Delivered msgs/s: from the first connection until the worker processed them all."""
        _, before = self.counts()
        t0 = time.perf_counter()
        smtp_source(self.port, size, count, sessions)
        deadline = time.monotonic() + TIMEOUT
        done = 0
        while time.monotonic() < deadline:
            done = self.counts()[1] - before
            if done >= count:
                break
            time.sleep(0.02)
        assert done >= count, f"only {done} of {count} processed"
        return count / (time.perf_counter() - t0)

    def cli(self, *args: str) -> dict[str, object]:
        out = subprocess.run(
            [sys.executable, "-m", "mailgate.cli", *args, "--config", str(self.config), "--json"],
            capture_output=True,
            env=self.env,
            timeout=TIMEOUT,
            check=True,
        )
        result: dict[str, object] = json.loads(out.stdout)
        return result

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=60)


def while_loading(server: Mailgate, fn: object, size: int, count: int) -> tuple[object, int]:
    """``fn()`` while smtp-source sends ``count`` messages; returns (result, acked meanwhile)."""
    before = server.last_seq()
    load = threading.Thread(target=smtp_source, args=(server.port, size, count, 4))
    load.start()
    time.sleep(0.2)
    try:
        result = fn()  # type: ignore[operator]
        during = server.last_seq() - before
    finally:
        load.join(timeout=TIMEOUT)
    return result, during


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="smaller counts")
    ap.add_argument("--repeat", type=int, default=3, help="runs per cell; the median is printed")
    args = ap.parse_args()
    counts = {4096: 400 if args.quick else 1500, 102400: 150 if args.quick else 400}
    root = Path(tempfile.mkdtemp(prefix="mailgate-governance-bench-"))
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    servers: list[Mailgate] = []
    try:
        off = Mailgate(root / "off", {})
        servers.append(off)
        on = Mailgate(root / "on", {"MAILGATE_ENCRYPTION_KEY": key})
        servers.append(on)
        print("| cell | encryption off | encryption on | ratio |\n|---|---|---|---|")
        for size in (4096, 102400):
            off_runs, on_runs = [], []
            for _ in range(args.repeat):
                off_runs.append(off.run(size, counts[size], 20))
                on_runs.append(on.run(size, counts[size], 20))
            a, b = statistics.median(off_runs), statistics.median(on_runs)
            print(f"| {size // 1024} KB ×20 delivered | {a:.0f}/s | {b:.0f}/s | {b / a:.2f}× |")

        total = off.counts()[0]
        conn = sqlite3.connect(off.db, timeout=30)
        with conn:
            conn.execute("UPDATE messages SET received_at = received_at - 400 * 86400")
        conn.close()
        cutoff = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 200 * 86400))
        report, during = while_loading(
            off, lambda: off.cli("purge", "--before", cutoff), 4096, counts[4096] // 2
        )
        assert isinstance(report, dict)
        seconds = float(report["seconds"])  # type: ignore[arg-type]
        purged = int(report["messages"])  # type: ignore[call-overload]
        print(
            f"\npurge while serving: {purged} of {total} messages in {seconds:.2f}s ="
            f" {purged / seconds:.0f} msgs/s ({report['batches']} batches,"
            f" {report['blobs']} files); {during} messages accepted meanwhile"
        )

        dest = root / "backup"
        backup, during = while_loading(
            on, lambda: on.cli("backup", str(dest)), 4096, counts[4096] // 2
        )
        assert isinstance(backup, dict)
        mb = (int(backup["db_bytes"]) + int(backup["blob_bytes"])) / 1e6  # type: ignore[call-overload]
        print(
            f"backup while serving (encrypted store): {backup['messages']} messages, {mb:.1f} MB"
            f" in {float(backup['seconds']):.2f}s = {backup['mb_per_s']} MB/s;"  # type: ignore[arg-type]
            f" {during} messages accepted meanwhile"
        )
    finally:
        for s in servers:
            try:
                s.stop()
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass


if __name__ == "__main__":
    main()
