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

A client waits on one kind of write: the spool commit before its 250 (``urgent``). Measured at
one SMTP session with the worker running, the front waited ~0.44 ms a message for the lock
(the worker's transactions) beside its own ~0.6 ms commit. So an urgent batch also holds a
shared ``flock`` on a gate file while it waits for the lock and commits, and every other batch
first waits for that gate to be free, polling for at most ``YIELD_MAX`` (so a front that
commits back to back slows the workers down, never stops them): a worker's next transaction
starts after the waiting spool commit instead of before it.

An ingest worker process has no client waiting on its event loop, so its writer runs
``inline``: the writes submitted during one turn of the loop are committed together at the end
of that turn, on the loop's thread, instead of crossing to a writer thread and back (two thread
wake-ups per batch and the GIL hand-overs between them; a worker's CPU per 4 KB message fell
~8 %). The listener keeps the thread: its loop must go on reading other sessions while a
commit waits for its fsync, which is what lets concurrent DATA commands share one.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from mailgate import metrics
from mailgate.store.base import StoreError

T = TypeVar("T")

_STOP = object()
YIELD_MAX = 0.004
"""Longest a non-urgent batch waits for urgent ones (seconds); then it takes its turn."""
_YIELD_POLL = 0.0002
CHECKPOINT_EVERY = 0.25
"""Seconds between a writer's WAL checkpoints (``Writer._maybe_checkpoint``)."""
CHECKPOINT_FALLBACK = 2.0
"""At most this many seconds between a writer's checkpoints, however busy it is."""


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
        # Savepoint (statement) journals in memory: SQLite spills them to a file in /var/tmp
        # past 64 KiB, then writes every journaled page with its own system call (a batch of
        # 100 KB envelopes did, ~20 page writes per message). Temp tables and sorts of
        # mailgate's queries are small; ``full_vacuum`` turns it back for VACUUM's copy.
        conn.execute("PRAGMA temp_store = MEMORY")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.row_factory = sqlite3.Row
    return conn


class _Request:
    __slots__ = ("durable", "fn", "future", "loop", "urgent")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], Any],
        future: asyncio.Future[Any],
        loop: asyncio.AbstractEventLoop,
        durable: bool,
        urgent: bool = False,
    ) -> None:
        self.fn = fn
        self.future = future
        self.loop = loop
        self.durable = durable
        self.urgent = urgent


class _SyncRequest:
    __slots__ = ("done", "durable", "fn", "ok", "urgent", "value")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any]) -> None:
        self.fn = fn
        self.durable = True
        self.urgent = False
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
        inline: bool = False,
    ) -> None:
        self.path = path
        self.inline = inline
        self.synchronous = synchronous
        self.window = window
        self.max_batch = max(1, max_batch)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._lock_fd = -1
        self._gate_fd = -1
        self._level = synchronous
        self._last_urgent = -1e9
        self._last_checkpoint = time.monotonic()
        # inline mode: requests of one event-loop turn, committed together at its end
        self._open = False
        self._pending: list[Any] = []
        self._flush_handle: asyncio.Handle | None = None
        self._mutex = threading.Lock()

    def start(self) -> None:
        if self.inline:
            try:
                self._connect()
            except BaseException as exc:
                raise StoreError(f"cannot open {self.path}: {exc}") from exc
            self._open = True
            return
        self._thread = threading.Thread(
            target=self._run, name="mailgate-sqlite-writer", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            raise StoreError(f"cannot open {self.path}: {self._start_error}") from self._start_error

    def stop(self) -> None:
        if self.inline:
            if self._open:
                if self._flush_handle is not None:
                    self._flush_handle.cancel()
                    self._flush_handle = None
                while self._pending:  # what callers still wait on is committed first
                    batch, self._pending = self._pending, []
                    self._pending[:0] = self._write_or_fail(batch)
                self._open = False
                self._close()
            return
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None

    async def run(
        self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True, urgent: bool = False
    ) -> T:
        """Run ``fn(conn)`` in the next group transaction; return after its COMMIT.

        ``durable=False`` marks a write whose loss on power failure only repeats work (a
        processed message goes back to ``spooled``, a webhook is sent again): with
        ``synchronous = FULL`` a batch of only such writes commits without its own fsync; the
        next durable commit (or checkpoint) fsyncs the WAL, and with it these frames.
        ``urgent=True``: a client is waiting on this commit (the spool before a 250); other
        processes' writes step aside for it (see the module docstring).
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        if self.inline:
            if not self._open:
                raise StoreError("store is closed")
            self._pending.append(_Request(fn, fut, loop, durable, urgent))
            if self._flush_handle is None:
                self._flush_handle = loop.call_soon(self._flush)
            return await fut
        if self._thread is None:
            raise StoreError("store is closed")
        self._queue.put(_Request(fn, fut, loop, durable, urgent))
        return await fut

    def run_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` through the writer from code without an event loop; return after COMMIT."""
        req = _SyncRequest(fn)
        if self.inline:
            if not self._open:
                raise StoreError("store is closed")
            self._write([req])
        else:
            if self._thread is None:
                raise StoreError("store is closed")
            self._queue.put(req)
            req.done.wait()
        if not req.ok:
            raise req.value
        return req.value  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ inline mode

    def _flush(self) -> None:
        """Commit the requests of this event-loop turn (inline mode)."""
        self._flush_handle = None
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
        rest = self._write_or_fail(batch) if batch else []
        if rest or self._pending:
            self._pending[:0] = rest
            if self._open:
                self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _write_or_fail(self, batch: list[Any]) -> list[Any]:
        """``_write``; if it breaks (the lock file gone, say), the batch's callers get the
        error instead of waiting for ever."""
        try:
            return self._write(batch)
        except Exception as exc:
            self._fail_all(batch, exc, direct=True)
            return []

    def _write(self, batch: list[Any]) -> list[Any]:
        """One batch on the calling thread: the gate, the lock, the transaction."""
        assert self._conn is not None
        with self._mutex:
            urgent = any(item.urgent for item in batch)
            with self._turn(urgent):
                rest = self._commit_batch(self._conn, batch, yielding=not urgent, direct=True)
            self._maybe_checkpoint(self._conn)
        return rest

    @contextlib.contextmanager
    def _turn(self, urgent: bool) -> Iterator[None]:
        """This process's turn to write: the gate (held shared by an urgent batch while it waits
        and commits, waited for by the others) and then the write lock."""
        if urgent:
            fcntl.flock(self._gate_fd, fcntl.LOCK_SH)
        else:
            self._yield_to_urgent()
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        finally:
            if urgent:
                fcntl.flock(self._gate_fd, fcntl.LOCK_UN)
                self._last_urgent = time.monotonic()

    # ------------------------------------------------------------------ writer thread

    def _connect(self) -> None:
        self._conn = connect(self.path, synchronous=self.synchronous)
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        self._lock_fd = os.open(f"{self.path}-writelock", flags, 0o600)
        self._gate_fd = os.open(f"{self.path}-writegate", flags, 0o600)
        # checkpoints run outside the write lock (_maybe_checkpoint), not inside a COMMIT
        self._conn.execute("PRAGMA wal_autocheckpoint = 0")

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        os.close(self._lock_fd)
        os.close(self._gate_fd)

    def _run(self) -> None:
        try:
            self._connect()
        except BaseException as exc:
            self._start_error = exc
            self._ready.set()
            return
        self._ready.set()
        conn = self._conn
        assert conn is not None
        carry: list[Any] = []  # requests a yielding batch left for the next one
        while True:
            if carry:
                first, batch, carry = carry[0], carry, []
            else:
                first = self._queue.get()
                if first is _STOP:
                    break
                batch = [first]
            urgent = first.urgent
            # the gate and the cross-process write lock (see the module docstring); waiting
            # here lets more requests queue up for this same transaction
            with self._turn(urgent):
                batch, stop = self._gather(batch)
                work = [item for item in batch if item is not _STOP]
                carry = self._commit_batch(conn, work, yielding=not (urgent or stop))
            if stop:
                break
            self._maybe_checkpoint(conn)
        self._close()

    def _gather(self, batch: list[Any]) -> tuple[list[Any], bool]:
        """``batch`` and what else is queued (within ``window``); whether a stop is among it."""
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
        return batch, any(item is _STOP for item in batch)

    def _maybe_checkpoint(self, conn: sqlite3.Connection) -> None:
        """Copy the WAL into the database now and then, between batches and without the write
        lock: a PASSIVE checkpoint lets other processes commit meanwhile. SQLite's automatic
        checkpoint ran inside the COMMIT that crossed 1000 pages, with the lock held across its
        two fsyncs, so a spool commit of the front waited for a worker's checkpoint. Every
        ``CHECKPOINT_EVERY`` when the writer has nothing queued, and every
        ``CHECKPOINT_FALLBACK`` whatever it has; a writer that serves spool commits leaves
        the frequent ones to the others (the ingest workers)."""
        now = time.monotonic()
        since = now - self._last_checkpoint
        if since < CHECKPOINT_FALLBACK:  # due at the latest then, busy or not
            if since < CHECKPOINT_EVERY or now - self._last_urgent < CHECKPOINT_FALLBACK:
                return
            if self._pending or not self._queue.empty():
                return  # between busy batches: wait for a pause
        self._last_checkpoint = now
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error:
            pass  # busy or interrupted: the next one copies these frames too

    def _urgent_waiting(self) -> bool:
        """Whether another process's urgent batch holds the gate (is waiting or committing)."""
        try:
            fcntl.flock(self._gate_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self._gate_fd, fcntl.LOCK_UN)
        return False

    def _yield_to_urgent(self) -> None:
        """Wait (at most ``YIELD_MAX``) while another process's urgent batch holds the gate."""
        deadline = time.monotonic() + YIELD_MAX
        while self._urgent_waiting() and time.monotonic() < deadline:
            time.sleep(_YIELD_POLL)

    def _commit_batch(
        self,
        conn: sqlite3.Connection,
        batch: list[Any],
        *,
        yielding: bool = False,
        direct: bool = False,
    ) -> list[Any]:
        """Run and commit ``batch``; return the requests it left to the next batch. A
        ``yielding`` batch stops early when another process's urgent batch waits at the gate,
        so that one waits for a request's work, not a whole batch's."""
        outcomes: list[tuple[Any, bool, Any]] = []
        rest: list[Any] = []
        try:
            if self.synchronous == "FULL":
                level = "FULL" if any(item.durable for item in batch) else "NORMAL"
                if level != self._level:
                    conn.execute(f"PRAGMA synchronous = {level}")
                    self._level = level
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._fail_all(batch, exc, direct)
            return []
        for n, item in enumerate(batch):
            if yielding and n and self._urgent_waiting():
                rest, batch = batch[n:], batch[:n]
                break
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
            self._fail_all(batch, exc, direct)
            return rest
        metrics.SPOOL_BATCH.observe(len(batch))
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for item, ok, value in outcomes:
            if isinstance(item, _Request):
                by_loop.setdefault(item.loop, []).append((item.future, ok, value))
            else:
                item.settle(ok, value)
        self._hand_back(by_loop, direct)
        return rest

    @staticmethod
    def _hand_back(
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]],
        direct: bool,
    ) -> None:
        """Settle the futures: on their loop's thread (``direct``: we are on it), or through it."""
        for loop, results in by_loop.items():
            try:
                if direct:
                    _settle(results)
                else:
                    loop.call_soon_threadsafe(_settle, results)
            except RuntimeError:
                pass  # the loop closed while we committed; nobody is waiting any more

    def _fail_all(self, batch: list[Any], exc: BaseException, direct: bool = False) -> None:
        err = StoreError(f"commit failed: {exc}")
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for item in batch:
            if isinstance(item, _Request):
                by_loop.setdefault(item.loop, []).append((item.future, False, err))
            else:
                item.settle(False, err)
        self._hand_back(by_loop, direct)
