"""``mailgate db status|migrate`` on SQLite (see ``store.ports.SchemaAdmin``).

``open()`` migrates as it always did (one embedded file, one node); these let an operator look
first, and refuse a data dir that a newer mailgate migrated.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from mailgate.store.base import StoreError
from mailgate.store.ports import SchemaStatus
from mailgate.store.sqlite_base import migrations


def sqlite_schema_status(path: Path) -> SchemaStatus:
    known = migrations()
    done: dict[int, str] = {}
    if path.is_file():
        conn = sqlite3.connect(str(path))
        try:
            table = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
            ).fetchone()
            if table:
                done = dict(conn.execute("SELECT version, name FROM schema_version").fetchall())
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {path}: {exc}") from exc
        finally:
            conn.close()
    return SchemaStatus(
        current=max(done, default=0),
        latest=max((v for v, _, _ in known), default=0),
        applied=[done[v] for v in sorted(done)],
        pending=[name for v, name, _ in known if v not in done],
    )


def refuse_newer(path: Path) -> None:
    st = sqlite_schema_status(path)
    if st.newer:
        raise StoreError(
            f"{path}: schema version {st.current} is newer than this mailgate knows"
            f" ({st.latest}): upgrade mailgate"
        )


def refuse_pending(path: Path) -> None:
    st = sqlite_schema_status(path)
    if st.pending and not st.newer:
        raise StoreError(
            f"{path}: the schema lacks {', '.join(st.pending)} and [store] migrate = false:"
            " run `mailgate db migrate`"
        )


class SchemaMixin:
    path: Path
    prepare: Callable[[], list[str]]  # SqliteStore.prepare: create, check, migrate

    async def schema_status(self) -> SchemaStatus:
        return sqlite_schema_status(self.path)

    async def migrate(self) -> list[str]:
        refuse_newer(self.path)
        return self.prepare()
