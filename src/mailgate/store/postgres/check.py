"""``mailgate db check`` on PostgreSQL: the schema is current, every message's raw bytes are
there and of their recorded size (read, not ``octet_length``: a damaged TOAST value fails on
read), and which attachment hashes each message's rows name, so the caller can re-derive them
from the raw message (on PostgreSQL the raw message is the attachments' source of truth; the
local blob directory is only a cache)."""

from __future__ import annotations

import asyncpg

from mailgate.store.base import StoreError
from mailgate.store.check import CheckReport
from mailgate.store.postgres.base import PgBase


class PgCheckMixin(PgBase):
    async def check_rows(self, report: CheckReport) -> dict[str, set[str]]:
        """Fill ``report`` from the database; the attachment hashes named per message."""
        try:
            async with self.pool.acquire() as conn, conn.transaction(readonly=True):
                async for rec in conn.cursor(
                    "SELECT m.id, m.size, r.raw FROM messages m"
                    " LEFT JOIN message_raw r ON r.id = m.id WHERE m.state != 'notice'",
                    prefetch=20,
                ):
                    report.messages += 1
                    raw = rec["raw"]
                    if raw is None:
                        report.problems.append(f"{rec['id']}: raw message missing")
                        continue
                    report.raw_checked += 1
                    if len(raw) != rec["size"]:
                        report.problems.append(
                            f"{rec['id']}: raw is {len(raw)} bytes, {rec['size']} recorded"
                        )
                named: dict[str, set[str]] = {}
                for row in await conn.fetch("SELECT msg_id, sha256 FROM attachments"):
                    named.setdefault(row["msg_id"], set()).add(row["sha256"])
        except (asyncpg.PostgresError, OSError) as exc:
            raise StoreError(f"database: {exc}") from exc
        return named
