"""Classifier labels and model versions on PostgreSQL (see ``store.models.ModelStore``).

One active model per tenant is a partial unique index; activation locks the tenant's rows, so
two operators (or nodes) activating at once leave exactly one active version.
"""

from __future__ import annotations

import time
from typing import Any

from mailgate.store.base import NotFound
from mailgate.store.models import LabelRecord, ModelRecord
from mailgate.store.models_logic import MODEL_COLS, label_record, model_record
from mailgate.store.postgres.base import PgBase, dumps


class PgModelMixin(PgBase):
    async def add_label(
        self, msg_id: str, queue: str, tags: tuple[str, ...], *, by: str
    ) -> LabelRecord:
        now = time.time()
        row = await self._fetchrow(
            "INSERT INTO labels (msg_id, tenant, queue, tags, labelled_by, labelled_at)"
            " SELECT id, tenant, $2, $3, $4, $5 FROM messages WHERE id = $1"
            " ON CONFLICT (msg_id) DO UPDATE SET queue = excluded.queue, tags = excluded.tags,"
            " labelled_by = excluded.labelled_by, labelled_at = excluded.labelled_at"
            " RETURNING tenant",
            msg_id,
            queue,
            dumps(list(tags)),
            by,
            now,
        )
        if row is None:
            raise NotFound(msg_id)
        return LabelRecord(msg_id, row["tenant"], queue, tuple(tags), by, now)

    async def list_labels(self, tenant: str | None = None) -> list[LabelRecord]:
        rows = await self._fetch(
            "SELECT * FROM labels WHERE ($1::text IS NULL OR tenant = $1)"
            " ORDER BY labelled_at, msg_id",
            tenant,
        )
        return [label_record(r) for r in rows]

    async def save_model(self, tenant: str, data: str, summary: dict[str, Any]) -> int:
        row = await self._fetchrow(
            "INSERT INTO models (tenant, created_at, summary, data) VALUES ($1,$2,$3,$4)"
            " RETURNING version",
            tenant,
            time.time(),
            dumps(summary),
            data,
        )
        return int(row["version"]) if row else 0

    async def list_models(self, tenant: str | None = None) -> list[ModelRecord]:
        rows = await self._fetch(
            f"SELECT {MODEL_COLS} FROM models WHERE ($1::text IS NULL OR tenant = $1)"
            " ORDER BY version",
            tenant,
        )
        return [model_record(r) for r in rows]

    async def get_model(self, version: int) -> ModelRecord:
        row = await self._fetchrow(
            f"SELECT {MODEL_COLS}, data FROM models WHERE version = $1", version
        )
        if row is None:
            raise NotFound(f"model version {version}")
        return model_record(row, data=True)

    async def model_data(self, version: int) -> str:
        row = await self._fetchrow("SELECT data FROM models WHERE version = $1", version)
        if row is None:
            raise NotFound(f"model version {version}")
        return str(row["data"])

    async def active_models(self) -> dict[str, int]:
        rows = await self._fetch("SELECT tenant, version FROM models WHERE active")
        return {r["tenant"]: r["version"] for r in rows}

    async def activate_model(self, version: int) -> ModelRecord:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow("SELECT tenant FROM models WHERE version = $1", version)
            if row is None:
                raise NotFound(f"model version {version}")
            await conn.execute(
                "SELECT version FROM models WHERE tenant = $1 FOR UPDATE", row["tenant"]
            )
            await conn.execute(
                "UPDATE models SET active = false WHERE tenant = $1 AND active", row["tenant"]
            )
            found = await conn.fetchrow(
                "UPDATE models SET active = true, activated_at = $1 WHERE version = $2"
                f" RETURNING {MODEL_COLS}",
                time.time(),
                version,
            )
        return model_record(found)

    async def rollback_model(self, tenant: str) -> ModelRecord | None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT version FROM models WHERE tenant = $1 FOR UPDATE", tenant)
            cur = await conn.fetchrow(
                "SELECT version FROM models WHERE tenant = $1 AND active", tenant
            )
            if cur is None:
                raise NotFound(f"no active model for tenant {tenant!r}")
            prev = await conn.fetchrow(
                "SELECT version FROM models WHERE tenant = $1 AND version < $2"
                " AND activated_at IS NOT NULL ORDER BY version DESC LIMIT 1",
                tenant,
                cur["version"],
            )
            await conn.execute(
                "UPDATE models SET active = false WHERE version = $1", cur["version"]
            )
            if prev is None:
                return None
            found = await conn.fetchrow(
                "UPDATE models SET active = true, activated_at = $1 WHERE version = $2"
                f" RETURNING {MODEL_COLS}",
                time.time(),
                prev["version"],
            )
        return model_record(found)
