"""The writer's commit path: fsync only for durable batches, and writers hand over a lock file."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from mailgate.config import StoreConfig
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
async def test_two_writers_on_one_database_interleave_without_busy_errors(
    tmp_path: Path, durable: bool
) -> None:
    """Two writers (as the front and a worker process are) with a zero busy timeout: the lock
    file serializes them, so SQLite's lock is always free when a transaction begins."""
    path = tmp_path / "db.sqlite"
    _table(path)
    writers = [Writer(path, synchronous="FULL"), Writer(path, synchronous="FULL")]
    for w in writers:
        w.start()
    try:
        for w in writers:
            await w.run(lambda c: c.execute("PRAGMA busy_timeout = 0"))

        def insert(who: str) -> object:
            return lambda c: c.execute("INSERT INTO t (who) VALUES (?)", (who,))

        await asyncio.gather(
            *(writers[i % 2].run(insert(f"w{i % 2}"), durable=durable) for i in range(200))
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
