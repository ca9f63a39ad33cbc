"""The single SQLite writer with group commit.

SQLite allows one writer at a time, so mailgate funnels every write through one thread that
owns one connection (Datasette's single-writer pattern). Callers submit a function
``fn(conn) -> T``; the thread takes *every* request waiting at that moment, runs each inside
its own SAVEPOINT (one failing write does not spoil the others) and ends them with a single
COMMIT. Callers are woken only after that COMMIT returns, which is what lets the SMTP
handler say 250 only for bytes on disk while concurrent DATA commands share one fsync.

The front and each ingest worker are separate processes, each with its own writer, so their
transactions contend for SQLite's write lock. SQLite's busy handler polls that lock with sleeps
of 1, 2, 5, 10 ms…, which made every contended commit wait milliseconds after the lock was
already free (with ``synchronous=FULL``, where the lock is held across an fsync, this was the
main cost of durability). So writers first take an exclusive ``flock`` on a lock file beside
the database: the kernel hands it to the next waiter the moment it is released, and SQLite's
lock is then always free. Requests that arrive while the thread waits for the lock join the
batch, so a busy moment makes bigger group commits rather than longer waits.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from mailgate import metrics
from mailgate.store.base import StoreError

T = TypeVar("T")

_STOP = object()


def connect(path: Path, *, synchronous: str, readonly: bool = False) -> sqlite3.Connection:
    """A connection with mailgate's pragmas (WAL, busy timeout, foreign keys)."""
    if readonly:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
        )
    else:
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 10000")
    if not readonly:
        # Only takes effect on a new, empty database (or at the next VACUUM): purged space can
        # then be given back with ``PRAGMA incremental_vacuum`` (retention, issue 15).
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a commit survives a process crash (what SIGKILL tests), the last
        # commits may be lost on power failure. FULL fsyncs the WAL on every commit.
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        # Freed cells and pages are zeroed, so an updated or erased row leaves no stale copy
        # of personal data in the file (data governance, issue 15: erasure, retention).
        conn.execute("PRAGMA secure_delete = ON")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.row_factory = sqlite3.Row
    return conn


class _Request:
    __slots__ = ("durable", "fn", "future", "loop")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], Any],
        future: asyncio.Future[Any],
        loop: asyncio.AbstractEventLoop,
        durable: bool,
    ) -> None:
        self.fn = fn
        self.future = future
        self.loop = loop
        self.durable = durable


class _SyncRequest:
    __slots__ = ("done", "durable", "fn", "ok", "value")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any]) -> None:
        self.fn = fn
        self.durable = True
        self.done = threading.Event()
        self.ok = False
        self.value: Any = None

    def settle(self, ok: bool, value: Any) -> None:
        self.ok, self.value = ok, value
        self.done.set()


def _settle(results: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for fut, ok, value in results:
        if fut.done():
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


class Writer:
    """One thread, one connection, batched transactions. See the module docstring."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "NORMAL",
        window: float = 0.0,
        max_batch: int = 256,
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        self.window = window
        self.max_batch = max(1, max_batch)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._lock_fd = -1
        self._level = synchronous

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="mailgate-sqlite-writer", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            raise StoreError(f"cannot open {self.path}: {self._start_error}") from self._start_error

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None

    async def run(self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        """Run ``fn(conn)`` in the next group transaction; return after its COMMIT.

        ``durable=False`` marks a write whose loss on power failure only repeats work (a
        processed message goes back to ``spooled``, a webhook is sent again): with
        ``synchronous = FULL`` a batch of only such writes commits without its own fsync; the
        next durable commit (or checkpoint) fsyncs the WAL, and with it these frames.
        """
        if self._thread is None:
            raise StoreError("store is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Request(fn, fut, loop, durable))
        return await fut

    def run_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` through the writer from code without an event loop; return after COMMIT."""
        if self._thread is None:
            raise StoreError("store is closed")
        req = _SyncRequest(fn)
        self._queue.put(req)
        req.done.wait()
        if not req.ok:
            raise req.value
        return req.value  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ writer thread

    def _run(self) -> None:
        try:
            self._conn = connect(self.path, synchronous=self.synchronous)
            self._lock_fd = os.open(
                f"{self.path}-writelock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
        except BaseException as exc:
            self._start_error = exc
            self._ready.set()
            return
        self._ready.set()
        conn = self._conn
        while True:
            first = self._queue.get()
            if first is _STOP:
                break
            batch = [first]
            # the cross-process write lock (see the module docstring); waiting here lets more
            # requests queue up for this same transaction
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            if self.window > 0:
                deadline = time.monotonic() + self.window
                while len(batch) < self.max_batch:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        batch.append(self._queue.get(timeout=remaining))
                    except queue.Empty:
                        break
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is _STOP for item in batch)
            try:
                self._commit_batch(conn, [item for item in batch if item is not _STOP])
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            if stop:
                break
        conn.close()
        os.close(self._lock_fd)

    def _commit_batch(self, conn: sqlite3.Connection, batch: list[Any]) -> None:
        outcomes: list[tuple[Any, bool, Any]] = []
        try:
            if self.synchronous == "FULL":
                level = "FULL" if any(item.durable for item in batch) else "NORMAL"
                if level != self._level:
                    conn.execute(f"PRAGMA synchronous = {level}")
                    self._level = level
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._fail_all(batch, exc)
            return
        for item in batch:
            fn = item.fn
            try:
                conn.execute("SAVEPOINT w")
                value = fn(conn)
                conn.execute("RELEASE w")
                outcomes.append((item, True, value))
            except BaseException as exc:
                try:
                    conn.execute("ROLLBACK TO w")
                    conn.execute("RELEASE w")
                except sqlite3.Error:
                    pass
                outcomes.append((item, False, exc))
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self._fail_all(batch, exc)
            return
        metrics.SPOOL_BATCH.observe(len(batch))
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for item, ok, value in outcomes:
            if isinstance(item, _Request):
                by_loop.setdefault(item.loop, []).append((item.future, ok, value))
            else:
                item.settle(ok, value)
        for loop, results in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, results)
            except RuntimeError:
                pass  # the loop closed while we committed; nobody is waiting any more

    def _fail_all(self, batch: list[Any], exc: BaseException) -> None:
        err = StoreError(f"commit failed: {exc}")
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for item in batch:
            if isinstance(item, _Request):
                by_loop.setdefault(item.loop, []).append((item.future, False, err))
            else:
                item.settle(False, err)
        for loop, results in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, results)
            except RuntimeError:
                pass
