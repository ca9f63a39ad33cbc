#!/usr/bin/env python3
"""Latency of one durable commit while another process keeps writing: the commit path alone.

    python bench/commit_bench.py [--commits 300]

The shape of ``mailgate serve``: one process (the listener) commits 4 KB spool rows one at a
time and waits for each (a single SMTP session), while another (an ingest worker) commits
50 KB rows in a loop with a millisecond of work between them. Both use `Writer` on one WAL
database. Printed per configuration: median, p90 and mean latency of the listener's commits.

* ``NORMAL``: ``durability = "normal"``;
* ``FULL, no flock, worker durable``: fsync on every commit, SQLite's busy handler between the
  processes (mailgate before the write lock file);
* ``FULL, flock, worker durable``: the write lock file hands the lock over;
* ``FULL, flock, worker not durable``: the worker's writes commit without their own fsync
  (``Writer.run(durable=False)``), as the ingest worker's are: today's default.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mailgate.store import writer as W

FORK = mp.get_context("fork")  # the child inherits the flock switch of `_configure`


class _NoFlock:
    LOCK_EX = LOCK_UN = 0

    @staticmethod
    def flock(fd: int, op: int) -> None:
        return None


def _configure(flock: bool) -> None:
    if not flock:
        W.fcntl = _NoFlock  # type: ignore[assignment]


def _insert(blob: bytes) -> Any:
    return lambda c: c.execute("INSERT INTO t(b) VALUES (?)", (blob,))


def worker(path: str, sync: str, flock: bool, durable: bool, stop: Any) -> None:
    _configure(flock)
    w = W.Writer(Path(path), synchronous=sync)
    w.start()
    blob = os.urandom(50_000)

    async def loop() -> None:
        while not stop.is_set():
            await w.run(_insert(blob), durable=durable)
            time.sleep(0.001)

    asyncio.run(loop())
    w.stop()


def measure(path: str, sync: str, flock: bool, durable: bool, commits: int) -> list[float]:
    conn = W.connect(Path(path), synchronous=sync)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)")
    conn.close()
    _configure(flock)
    stop = FORK.Event()
    other = FORK.Process(target=worker, args=(path, sync, flock, durable, stop))
    other.start()
    time.sleep(0.3)
    w = W.Writer(Path(path), synchronous=sync)
    w.start()
    blob = os.urandom(4000)
    lat: list[float] = []

    async def go() -> None:
        for _ in range(commits):
            t0 = time.perf_counter()
            await w.run(_insert(blob))
            lat.append(time.perf_counter() - t0)

    asyncio.run(go())
    stop.set()
    other.join(60)
    w.stop()
    return sorted(lat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--commits", type=int, default=300)
    args = ap.parse_args()
    runs = [
        ("NORMAL", "NORMAL", False, True),
        ("FULL, no flock, worker durable", "FULL", False, True),
        ("FULL, flock, worker durable", "FULL", True, True),
        ("FULL, flock, worker not durable", "FULL", True, False),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, sync, flock, durable) in enumerate(runs):
            lat = measure(f"{tmp}/c{i}.sqlite", sync, flock, durable, args.commits)
            print(
                f"{label:34} median {statistics.median(lat) * 1e3:6.2f} ms"
                f"  p90 {lat[int(len(lat) * 0.9)] * 1e3:6.2f} ms"
                f"  mean {statistics.fmean(lat) * 1e3:6.2f} ms"
            )
            W.fcntl = __import__("fcntl")  # type: ignore[assignment]


if __name__ == "__main__":
    main()
