"""The writer's commit path: fsync only for durable batches, and writers hand over a lock file."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from mailgate.config import StoreConfig
from mailgate.store.base import StoreError
from mailgate.store.sqlite import SqliteStore
from mailgate.store.writer import Writer, connect


def _table(path: Path) -> None:
    conn = connect(path, synchronous="FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT)")
    conn.close()


def test_fsync_is_the_default() -> None:
    assert StoreConfig().durability == "fsync"


async def test_only_batches_with_a_durable_write_run_with_synchronous_full(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    _table(path)
    w = Writer(path, synchronous="FULL")
    w.start()
    try:

        def level(conn: sqlite3.Connection) -> int:
            conn.execute("INSERT INTO t (who) VALUES ('x')")
            return int(conn.execute("PRAGMA synchronous").fetchone()[0])

        assert await w.run(level, durable=False) == 1  # NORMAL: rides on the next fsync
        assert await w.run(level) == 2  # FULL
        # a batch mixing both is fsynced
        both = await asyncio.gather(w.run(level, durable=False), w.run(level))
        assert 2 in both
    finally:
        w.stop()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 4


async def test_normal_durability_never_switches_to_full(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    _table(path)
    w = Writer(path, synchronous="NORMAL")
    w.start()
    try:
        got = await w.run(lambda c: int(c.execute("PRAGMA synchronous").fetchone()[0]))
        assert got == 1
    finally:
        w.stop()


@pytest.mark.parametrize("durable", [True, False])
@pytest.mark.parametrize("inline", [False, True])
async def test_two_writers_on_one_database_interleave_without_busy_errors(
    tmp_path: Path, durable: bool, inline: bool
) -> None:
    """Two writers (as the front and a worker process are) with a zero busy timeout: the lock
    file serializes them, so SQLite's lock is always free when a transaction begins. With
    ``inline``, the second is a worker's inline writer and the first commits spools (urgent)."""
    path = tmp_path / "db.sqlite"
    _table(path)
    writers = [Writer(path, synchronous="FULL"), Writer(path, synchronous="FULL", inline=inline)]
    for w in writers:
        w.start()
    try:
        for w in writers:
            await w.run(lambda c: c.execute("PRAGMA busy_timeout = 0"))

        def insert(who: str) -> object:
            return lambda c: c.execute("INSERT INTO t (who) VALUES (?)", (who,))

        await asyncio.gather(
            *(
                writers[i % 2].run(
                    insert(f"w{i % 2}"), durable=durable, urgent=inline and i % 2 == 0
                )
                for i in range(200)
            )
        )
    finally:
        for w in writers:
            w.stop()
    assert (tmp_path / "db.sqlite-writelock").exists()
    with sqlite3.connect(path) as conn:
        rows = dict(conn.execute("SELECT who, COUNT(*) FROM t GROUP BY who").fetchall())
    assert rows == {"w0": 100, "w1": 100}


async def test_store_default_is_fsync_and_lock_file_is_private(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "data")
    assert store.synchronous == "FULL"
    async with store:
        assert await store.ping()
    mode = (tmp_path / "data" / "mailgate.sqlite-writelock").stat().st_mode & 0o777
    assert mode & 0o077 == 0


def _commits(w: Writer) -> list[str]:
    """The COMMITs the writer's connection runs (its trace), for counting transactions."""
    seen: list[str] = []
    assert w._conn is not None
    w._conn.set_trace_callback(lambda sql: seen.append(sql) if sql == "COMMIT" else None)
    return seen


@pytest.mark.parametrize("urgent_waits", [False, True])
async def test_a_batch_stops_early_for_an_urgent_commit_of_another_process(
    tmp_path: Path, urgent_waits: bool
) -> None:
    """Five queued worker writes go in one transaction, unless another process's spool commit
    holds the gate: then each write commits on its own, so the spool waits for one write's
    work, not five; none is lost or run twice."""
    import fcntl
    import os

    path = tmp_path / "db.sqlite"
    _table(path)
    w = Writer(path, synchronous="FULL")
    w.start()
    commits = _commits(w)
    lock = os.open(f"{path}-writelock", os.O_RDWR)
    gate = os.open(f"{path}-writegate", os.O_RDWR)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # hold the writer at the lock while the five queue up
        if urgent_waits:
            fcntl.flock(gate, fcntl.LOCK_SH)  # what SqliteStore.spool's batch holds
        runs = [
            asyncio.ensure_future(
                w.run(lambda c, i=i: c.execute("INSERT INTO t (who) VALUES (?)", (f"r{i}",)))
            )
            for i in range(5)
        ]
        await asyncio.sleep(0.05)
        fcntl.flock(lock, fcntl.LOCK_UN)
        await asyncio.wait_for(asyncio.gather(*runs), 10)
    finally:
        fcntl.flock(gate, fcntl.LOCK_UN)
        os.close(lock)
        os.close(gate)
        w.stop()
    # the first request may have started its batch alone before the others queued
    assert len(commits) == 5 if urgent_waits else len(commits) <= 2
    with sqlite3.connect(path) as conn:
        got = sorted(r[0] for r in conn.execute("SELECT who FROM t"))
    assert got == [f"r{i}" for i in range(5)]


async def test_urgent_writes_hold_the_gate_only_while_they_commit(tmp_path: Path) -> None:
    import fcntl
    import os

    path = tmp_path / "db.sqlite"
    _table(path)
    w = Writer(path, synchronous="FULL")
    w.start()
    gate = os.open(f"{path}-writegate", os.O_RDWR | os.O_CREAT)
    try:

        def held(conn: sqlite3.Connection) -> bool:
            try:
                fcntl.flock(gate, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(gate, fcntl.LOCK_UN)
            return False

        assert await w.run(held, urgent=True)
        assert not await w.run(held)
        fcntl.flock(gate, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released after the commit
    finally:
        os.close(gate)
        w.stop()


async def test_checkpoints_run_between_batches_not_inside_a_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's automatic checkpoint is off on writer connections (it ran inside the COMMIT,
    under the write lock); the writer copies the WAL into the database between batches."""
    from mailgate.store import writer

    path = tmp_path / "db.sqlite"
    _table(path)
    monkeypatch.setattr(writer, "CHECKPOINT_EVERY", 3600.0)
    w = Writer(path, synchronous="NORMAL")
    w.start()
    try:
        assert await w.run(lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()[0]) == 0
        blob = b"x" * 200_000
        for _ in range(30):  # ~1500 pages: past the 1000 at which SQLite would checkpoint
            await w.run(lambda c: c.execute("INSERT INTO t (who) VALUES (?)", (blob,)))
        assert path.stat().st_size < 1_000_000  # still in the WAL
        monkeypatch.setattr(writer, "CHECKPOINT_EVERY", 0.0)
        await w.run(lambda c: c.execute("INSERT INTO t (who) VALUES ('last')"))
        for _ in range(100):
            if path.stat().st_size > 6_000_000:
                break
            await asyncio.sleep(0.01)
        assert path.stat().st_size > 6_000_000  # copied into the database
    finally:
        w.stop()


async def test_inline_writer_commits_one_loop_turn_in_one_transaction(tmp_path: Path) -> None:
    """A worker process's writer (``inline=True``) runs on its event loop: the writes submitted
    in one loop turn share one transaction, a failing one is rolled back alone, and the others
    are committed before their callers resume."""
    path = tmp_path / "db.sqlite"
    _table(path)
    w = Writer(path, synchronous="FULL", inline=True)
    w.start()
    commits = _commits(w)
    try:

        def insert(who: str) -> Any:
            def fn(c: sqlite3.Connection) -> int:
                if who == "bad":
                    c.execute("INSERT INTO t (who) VALUES ('rolled back')")
                    raise ValueError("this write fails")
                return int(c.execute("INSERT INTO t (who) VALUES (?)", (who,)).lastrowid or 0)

            return fn

        got = await asyncio.gather(
            *(w.run(insert(f"r{i}"), durable=False) for i in range(5)),
            w.run(insert("bad")),
            return_exceptions=True,
        )
        assert [type(g) for g in got] == [int] * 5 + [ValueError]
        assert len(commits) == 1
        assert w.run_sync(lambda c: c.execute("SELECT COUNT(*) FROM t").fetchone()[0]) == 5
        pending = asyncio.ensure_future(w.run(insert("at stop")))
        await asyncio.sleep(0)  # queued, not yet flushed
        w.stop()  # commits what is pending before it closes
        assert await pending
        with pytest.raises(StoreError):
            await w.run(insert("after stop"))
    finally:
        w.stop()
    with sqlite3.connect(path) as conn:
        names = sorted(r[0] for r in conn.execute("SELECT who FROM t"))
    assert names == ["at stop", "r0", "r1", "r2", "r3", "r4"]


async def test_inline_writer_fails_its_callers_when_the_lock_breaks(tmp_path: Path) -> None:
    """A batch that cannot even take the lock file fails its callers (they do not wait for
    ever), and the writer goes on once the lock works again."""
    path = tmp_path / "db.sqlite"
    _table(path)
    w = Writer(path, synchronous="NORMAL", inline=True)
    w.start()
    saved = w._lock_fd
    try:
        w._lock_fd = -1  # flock(-1): EBADF
        with pytest.raises(StoreError, match="commit failed"):
            await asyncio.wait_for(w.run(lambda c: c.execute("INSERT INTO t VALUES (1, 'x')")), 5)
        w._lock_fd = saved
        await asyncio.wait_for(w.run(lambda c: c.execute("INSERT INTO t VALUES (2, 'y')")), 5)
    finally:
        w._lock_fd = saved
        w.stop()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT id FROM t").fetchall() == [(2,)]


def _temp_files() -> list[str]:
    """SQLite's temp files this process holds open (unlinked at creation: ``… (deleted)``)."""
    out = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = str(fd.readlink())
        except OSError:
            continue
        if "etilqs_" in target:
            out.append(target)
    return out


@pytest.mark.parametrize("memory", [True, False])
def test_savepoint_journals_of_the_writer_stay_in_memory(tmp_path: Path, memory: bool) -> None:
    """Every write runs in a savepoint (``SAVEPOINT w``); rewriting more than 64 KiB of existing
    pages inside one made SQLite spill the savepoint's journal to a temp file and write each
    page to it with its own system call. The writer's connections keep it in memory; a
    connection left at the default (the control) spills, which shows the test can see it."""
    path = tmp_path / "db.sqlite"
    conn = connect(path, synchronous="FULL")
    if not memory:
        conn.execute("PRAGMA temp_store = DEFAULT")
    conn.execute("CREATE TABLE big (id INTEGER PRIMARY KEY, v BLOB)")
    conn.executemany("INSERT INTO big (v) VALUES (randomblob(4000))", [()] * 100)
    before = _temp_files()
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("SAVEPOINT w")
    conn.execute("UPDATE big SET v = randomblob(4000)")  # ~100 existing pages: ~400 KB
    spilled = [f for f in _temp_files() if f not in before]
    conn.execute("RELEASE w")
    conn.execute("COMMIT")
    conn.close()
    assert (spilled == []) is memory, spilled
