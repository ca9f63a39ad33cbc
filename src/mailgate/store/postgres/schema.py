"""Schema migrations of the PostgreSQL backend: ``migrations/NNN_name.sql`` and a version table.

Nodes may start together: the migration runs under a transaction-scoped advisory lock, so
one node migrates and the others find the work done. A database whose schema is newer than
this mailgate knows is refused (an older node must not write into a newer layout).
"""

from __future__ import annotations

import time
from importlib import resources

import asyncpg

from mailgate.store.base import StoreError
from mailgate.store.ports import SchemaStatus

MIGRATION_LOCK = 0x6D61696C  # "mail": the advisory lock key of schema changes


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every ``postgres/migrations/NNN_name.sql``, in order."""
    out = []
    folder = resources.files("mailgate.store.postgres").joinpath("migrations")
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:3].isdigit():
            out.append((int(name[:3]), name, entry.read_text(encoding="utf-8")))
    out.sort()
    return out


_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY,"
    " name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
)


async def status(conn: asyncpg.Connection) -> SchemaStatus:
    known = migrations()
    exists = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
    rows = await conn.fetch("SELECT version, name FROM schema_version") if exists else []
    done = {r["version"]: r["name"] for r in rows}
    return SchemaStatus(
        current=max(done, default=0),
        latest=max((v for v, _, _ in known), default=0),
        applied=[done[v] for v in sorted(done)],
        pending=[name for v, name, _ in known if v not in done],
    )


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply what is missing (under the advisory lock); returns the names applied."""
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(_VERSION_TABLE)
        st = await status(conn)
        if st.newer:
            raise StoreError(
                f"the database schema is version {st.current}, newer than this mailgate knows"
                f" ({st.latest}): upgrade mailgate on this node"
            )
        done = set(st.applied)
        for version, name, sql in migrations():
            if name in done:
                continue
            try:
                await conn.execute(sql)
            except asyncpg.PostgresError as exc:
                raise StoreError(f"migration {name} failed: {exc}") from exc
            await conn.execute(
                "INSERT INTO schema_version (version, name, applied_at) VALUES ($1, $2, $3)",
                version,
                name,
                time.time(),
            )
            applied.append(name)
    return applied
