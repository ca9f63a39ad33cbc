"""Shared machinery of the SQLite backend: the writer, a reader, migrations, intent appliers.

Area mixins (``sqlite_pipeline``, ``sqlite_delivery``, ``sqlite_replies``) inherit
``SqliteBase`` and register an applier per intent type with ``@applies(IntentType)``; the
core ``complete()`` calls them inside the transaction that stores the processed envelope.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from mailgate import jsontext
from mailgate.store.base import Intent, StoreError
from mailgate.store.crypto import NULL_CODEC, NullCodec
from mailgate.store.writer import Writer, connect

IntentT = TypeVar("IntentT", bound=Intent)
Applier = Callable[[sqlite3.Connection, str, dict[str, Any], Any], None]
APPLIERS: dict[type[Intent], Applier] = {}


def applies(
    intent_type: type[IntentT],
) -> Callable[[Callable[[sqlite3.Connection, str, dict[str, Any], IntentT], None]], Applier]:
    """Register ``fn(conn, msg_id, envelope, intent)`` as the SQL for one intent type."""

    def deco(fn: Callable[[sqlite3.Connection, str, dict[str, Any], IntentT], None]) -> Applier:
        APPLIERS[intent_type] = fn
        return fn

    return deco


def apply_intents(
    conn: sqlite3.Connection, msg_id: str, envelope: dict[str, Any], intents: Sequence[Intent]
) -> None:
    for intent in intents:
        fn = APPLIERS.get(type(intent))
        if fn is None:
            raise StoreError(f"no SQLite applier for intent {type(intent).__name__}")
        fn(conn, msg_id, envelope, intent)


dumps = jsontext.dumps  # the one compact encoder (orjson): see mailgate.jsontext


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every ``migrations/NNN_name.sql``, in order."""
    out = []
    folder = resources.files("mailgate.store").joinpath("migrations")
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:3].isdigit():
            out.append((int(name[:3]), name, entry.read_text(encoding="utf-8")))
    out.sort()
    return out


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply the migrations not yet recorded in ``schema_version``; returns what was applied."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at REAL NOT NULL)"
    )
    done = {row[0] for row in conn.execute("SELECT version FROM schema_version")}
    applied = []
    for version, name, sql in migrations():
        if version in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                (version, name, time.time()),
            )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            raise StoreError(f"migration {name} failed: {exc}") from exc
        applied.append(name)
    return applied


def _statements(sql: str) -> list[str]:
    """Split a migration into statements (sqlite3.complete_statement knows about triggers)."""
    out: list[str] = []
    buf = ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip() and not buf.strip().startswith("--"):
        out.append(buf.strip())
    return [
        s
        for s in out
        if s.strip(" \n;")
        and not all(ln.strip().startswith("--") or not ln.strip() for ln in s.splitlines())
    ]


class Wakers:
    """Callbacks to run when the writer has committed new work for a worker (outbox rows, replies).

    Called from the writer thread, so each callback must be thread-safe (e.g. a
    ``loop.call_soon_threadsafe`` wrapper); one whose event loop has closed is skipped.
    """

    def __init__(self) -> None:
        self._fns: set[Callable[[], None]] = set()
        self._lock = threading.Lock()

    def add(self, fn: Callable[[], None]) -> None:
        with self._lock:
            self._fns.add(fn)

    def remove(self, fn: Callable[[], None]) -> None:
        with self._lock:
            self._fns.discard(fn)

    def wake(self) -> None:
        with self._lock:
            fns = list(self._fns)
        for fn in fns:
            try:
                fn()
            except RuntimeError:
                pass  # a worker whose loop already closed


class SqliteBase:
    """The writer and a read connection; area mixins build their methods on these."""

    path: Path
    codec: NullCodec = NULL_CODEC  # encryption at rest (store.crypto); set by app.build_store
    _writer: Writer
    _reader: aiosqlite.Connection | None
    _fast_reader: sqlite3.Connection | None = None

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        if self._reader is None:
            raise StoreError("store is closed")
        # execute + fetch in ONE call on the reader thread: two coroutines interleaving
        # execute/fetch on one connection would share a read transaction, and the later
        # query would see the earlier one's snapshot, missing rows committed in between.
        rows = await self._reader.execute_fetchall(sql, params)
        return list(rows)

    async def _read_one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        rows = await self._read(sql, params)
        return rows[0] if rows else None

    def _lookup(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """A point query on the caller's thread, through a private read-only connection.

        For queries that take microseconds (a primary key, ``PRAGMA data_version``): a hop to
        aiosqlite's thread and back costs more than the query, in CPU and in latency. Never for
        a query whose cost grows with the data: it would stall the event loop."""
        if self._reader is None:
            raise StoreError("store is closed")
        conn = self._fast_reader
        if conn is None:
            conn = connect(self.path, synchronous="NORMAL", readonly=True)
            self._fast_reader = conn
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"lookup failed: {exc}") from exc

    def close_lookup_reader(self) -> None:
        """Close the `_lookup` connection (the store's ``close()`` calls it)."""
        if self._fast_reader is not None:
            self._fast_reader.close()
            self._fast_reader = None

    async def _write(self, fn: Callable[[sqlite3.Connection], Any], *, durable: bool = True) -> Any:
        """``fn`` in the writer's next transaction; ``durable=False``: see ``Writer.run``."""
        return await self._writer.run(fn, durable=durable)
