"""SQLite side of the classifier area (``store.models``): labels and model versions."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from mailgate.store.base import NotFound
from mailgate.store.models import LabelRecord, ModelRecord
from mailgate.store.models_logic import MODEL_COLS, label_record, model_record
from mailgate.store.rows import row_dict
from mailgate.store.sqlite_base import SqliteBase, dumps


class ModelStoreMixin(SqliteBase):
    """See `mailgate.store.models.ModelStore`."""

    async def add_label(
        self, msg_id: str, queue: str, tags: tuple[str, ...], *, by: str
    ) -> LabelRecord:
        now = time.time()

        def write(conn: sqlite3.Connection) -> LabelRecord:
            row = conn.execute("SELECT tenant FROM messages WHERE id = ?", (msg_id,)).fetchone()
            if row is None:
                raise NotFound(msg_id)
            conn.execute(
                "INSERT INTO labels (msg_id, tenant, queue, tags, labelled_by, labelled_at)"
                " VALUES (?,?,?,?,?,?) ON CONFLICT (msg_id) DO UPDATE SET queue = excluded.queue,"
                " tags = excluded.tags, labelled_by = excluded.labelled_by,"
                " labelled_at = excluded.labelled_at",
                (msg_id, row["tenant"], queue, dumps(list(tags)), by, now),
            )
            return LabelRecord(msg_id, row["tenant"], queue, tuple(tags), by, now)

        result: LabelRecord = await self._write(write)
        return result

    async def list_labels(self, tenant: str | None = None) -> list[LabelRecord]:
        sql = "SELECT * FROM labels"
        params: list[Any] = []
        if tenant is not None:
            sql += " WHERE tenant = ?"
            params.append(tenant)
        rows = await self._read(sql + " ORDER BY labelled_at, msg_id", params)
        return [label_record(r) for r in rows]

    async def save_model(self, tenant: str, data: str, summary: dict[str, Any]) -> int:
        codec = self.codec

        def write(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO models (tenant, created_at, summary, data) VALUES (?,?,?,?)",
                (tenant, time.time(), dumps(summary), data if not codec.enabled else ""),
            )
            version = int(cur.lastrowid or 0)
            if codec.enabled:  # its vocabulary is words of customers' mail: sealed like them
                sealed = codec.seal_text(_where(version), data)
                conn.execute("UPDATE models SET data = ? WHERE version = ?", (sealed, version))
            return version

        version: int = await self._write(write)
        return version

    async def list_models(self, tenant: str | None = None) -> list[ModelRecord]:
        sql = f"SELECT {MODEL_COLS} FROM models"
        params: list[Any] = []
        if tenant is not None:
            sql += " WHERE tenant = ?"
            params.append(tenant)
        rows = await self._read(sql + " ORDER BY version", params)
        return [model_record(r) for r in rows]

    async def get_model(self, version: int) -> ModelRecord:
        row = await self._read_one(
            f"SELECT {MODEL_COLS}, data FROM models WHERE version = ?", (version,)
        )
        if row is None:
            raise NotFound(f"model version {version}")
        opened = row_dict(row)
        opened["data"] = self.codec.open_text(_where(version), row["data"])
        return model_record(opened, data=True)

    async def model_data(self, version: int) -> str:
        row = await self._read_one("SELECT data FROM models WHERE version = ?", (version,))
        if row is None:
            raise NotFound(f"model version {version}")
        return self.codec.open_text(_where(version), str(row["data"]))

    async def active_models(self) -> dict[str, int]:
        rows = await self._read("SELECT tenant, version FROM models WHERE active = 1")
        return {r["tenant"]: r["version"] for r in rows}

    async def activate_model(self, version: int) -> ModelRecord:
        def write(conn: sqlite3.Connection) -> ModelRecord:
            row = conn.execute("SELECT tenant FROM models WHERE version = ?", (version,)).fetchone()
            if row is None:
                raise NotFound(f"model version {version}")
            conn.execute(
                "UPDATE models SET active = 0 WHERE tenant = ? AND active = 1", (row["tenant"],)
            )
            conn.execute(
                "UPDATE models SET active = 1, activated_at = ? WHERE version = ?",
                (time.time(), version),
            )
            found = conn.execute(f"SELECT {MODEL_COLS} FROM models WHERE version = ?", (version,))
            return model_record(found.fetchone())

        result: ModelRecord = await self._write(write)
        return result

    async def rollback_model(self, tenant: str) -> ModelRecord | None:
        def write(conn: sqlite3.Connection) -> ModelRecord | None:
            cur = conn.execute(
                "SELECT version FROM models WHERE tenant = ? AND active = 1", (tenant,)
            ).fetchone()
            if cur is None:
                raise NotFound(f"no active model for tenant {tenant!r}")
            prev = conn.execute(
                "SELECT version FROM models WHERE tenant = ? AND version < ?"
                " AND activated_at IS NOT NULL ORDER BY version DESC LIMIT 1",
                (tenant, cur["version"]),
            ).fetchone()
            conn.execute("UPDATE models SET active = 0 WHERE version = ?", (cur["version"],))
            if prev is None:
                return None
            conn.execute(
                "UPDATE models SET active = 1, activated_at = ? WHERE version = ?",
                (time.time(), prev["version"]),
            )
            found = conn.execute(
                f"SELECT {MODEL_COLS} FROM models WHERE version = ?", (prev["version"],)
            )
            return model_record(found.fetchone())

        result: ModelRecord | None = await self._write(write)
        return result


def _where(version: int) -> str:
    """Where a model's sealed data belongs (``codec.seal_text``'s associated data)."""
    return f"model-{version}:data"
