"""The SQLite backend: one file in the data dir, WAL, one writer with group commit.

``SqliteStore`` is the composition of the core spool/message methods below and the area
mixins (pipeline indexes and quarantine, delivery outbox and events, auto-reply outbox,
classifier labels and models).
Only ``app.py`` (and the CLI through it) constructs it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiosqlite

from mailgate.store.base import (
    Intent,
    MessageSummary,
    NotFound,
    SpoolRecord,
    StoreError,
)
from mailgate.store.message_logic import message_summary
from mailgate.store.private import create_private_file, make_private_dirs
from mailgate.store.rows import row_dict
from mailgate.store.sqlite_base import SqliteBase, dumps, migrate
from mailgate.store.sqlite_claims import SpoolClaimsMixin
from mailgate.store.sqlite_crypto import apply_sealed, index_intents, sealed_subject
from mailgate.store.sqlite_delivery import DeliveryStoreMixin
from mailgate.store.sqlite_models import ModelStoreMixin
from mailgate.store.sqlite_notify import SqliteNotifier
from mailgate.store.sqlite_pipeline import PipelineStoreMixin
from mailgate.store.sqlite_replies import ReplyStoreMixin
from mailgate.store.sqlite_schema import SchemaMixin, refuse_newer, refuse_pending
from mailgate.store.writer import Writer, connect

DB_NAME = "mailgate.sqlite"


class SqliteStore(
    SpoolClaimsMixin,
    PipelineStoreMixin,
    DeliveryStoreMixin,
    ReplyStoreMixin,
    ModelStoreMixin,
    SchemaMixin,
    SqliteBase,
):
    """See the module docstring and ``store.base`` for the protocols this implements."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        durability: str = "fsync",
        group_commit_window: float = 0.0,
        max_batch: int = 256,
        migrate: bool = True,
        inline_writer: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.auto_migrate = migrate
        self.path = self.data_dir / DB_NAME
        self.synchronous = "FULL" if durability == "fsync" else "NORMAL"
        self._writer = Writer(
            self.path,
            synchronous=self.synchronous,
            window=group_commit_window,
            max_batch=max_batch,
            inline=inline_writer,
        )
        self._reader = None
        self.notifier = SqliteNotifier()

    # ------------------------------------------------------------------ lifecycle

    def prepare(self) -> list[str]:
        """Create the data dir and database and apply migrations (sync; before the loop runs).

        Refuses a database a newer mailgate migrated (``StoreError``)."""
        refuse_newer(self.path)
        try:
            make_private_dirs(self.data_dir)
            create_private_file(self.path)  # 0600; SQLite gives -wal/-shm the same mode
            conn = connect(self.path, synchronous=self.synchronous)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the store in {self.data_dir}: {exc}") from exc
        try:
            return migrate(conn)
        finally:
            conn.close()

    async def open(self) -> None:
        if not self.auto_migrate:
            refuse_pending(self.path)  # ``[store] migrate = false``: `mailgate db migrate` first
        self.prepare()
        self._writer.start()
        self._reader = await aiosqlite.connect(str(self.path), isolation_level=None)
        self._reader.row_factory = sqlite3.Row
        await self._reader.execute_fetchall("PRAGMA busy_timeout = 10000")

    async def close(self) -> None:
        self.close_lookup_reader()
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
        self._writer.stop()

    async def __aenter__(self) -> SqliteStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ spool (SMTP side)

    async def spool(self, *records: SpoolRecord) -> None:
        """See `Spool.spool`: returns after the COMMIT that holds these records (all or none)."""
        seal = self.codec.seal_text
        rows = [
            (
                r.id,
                r.received_at,
                r.tenant,
                seal(f"{r.id}:mail_from", r.mail_from),
                seal(f"{r.id}:rcpt_to", dumps(r.rcpt_to)),
                r.client_ip,
                r.helo,
                int(r.tls),
                r.trace_id,
                seal(f"{r.id}:auth", dumps(r.auth)) if r.auth is not None else None,
                seal(f"{r.id}:smtp", dumps(r.smtp)) if r.smtp else None,
                len(r.raw),
            )
            for r in records
        ]
        raws = [(r.id, self.codec.seal_raw(r.id, r.raw)) for r in records]

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO messages (id, received_at, tenant, mail_from, rcpt_to, client_ip, helo,"
                " tls, trace_id, auth, smtp, size) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
            conn.executemany("INSERT INTO message_raw (id, raw) VALUES (?, ?)", raws)

        await self._writer.run(write, urgent=True)

    # ------------------------------------------------------------------ ingest side

    async def complete(
        self,
        msg_id: str,
        envelope: dict[str, Any],
        intents: list[Intent],
        *,
        state: str = "processed",
    ) -> None:
        """See `MessageStore.complete`."""
        env_json, sealed = self.codec.seal_envelope(msg_id, envelope)
        subject = sealed_subject(self.codec, msg_id, envelope)
        indexed = index_intents(self.codec, intents)

        def write(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT state FROM messages WHERE id = ?", (msg_id,)).fetchone()
            if row is None:
                raise NotFound(msg_id)
            if row["state"] != "spooled":
                return  # already completed: a replayed run must not write twice
            conn.execute(
                "UPDATE messages SET state = ?, envelope = ?, sealed = ?, subject = ?,"
                " processed_at = ?, last_error = NULL WHERE id = ?",
                (state, env_json, sealed, subject, time.time(), msg_id),
            )
            apply_sealed(conn, self.codec, msg_id, envelope, indexed)

        # Not fsynced on its own: lost to a power failure, the message is still spooled (that
        # commit was durable) and is processed again. The next durable commit syncs it.
        await self._writer.run(write, durable=False)

    async def fail(self, msg_id: str, error: str, *, max_attempts: int) -> str:
        """See `MessageStore.fail`."""

        def write(conn: sqlite3.Connection) -> str:
            row = conn.execute("SELECT attempts FROM messages WHERE id = ?", (msg_id,)).fetchone()
            if row is None:
                raise NotFound(msg_id)
            attempts = row["attempts"] + 1
            state = "dead" if attempts >= max_attempts else "spooled"
            conn.execute(
                "UPDATE messages SET attempts = ?, last_error = ?, state = ?, lease_owner = NULL,"
                " lease_until = NULL WHERE id = ?",
                (attempts, error[:2000], state, msg_id),
            )
            return state

        result: str = await self._writer.run(write)
        return result

    async def requeue(self, msg_id: str) -> None:
        """Put a processed/dead message back to ``spooled`` so the ingest worker runs it again."""

        def write(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "UPDATE messages SET state = 'spooled', attempts = 0, last_error = NULL,"
                " lease_owner = NULL, lease_until = NULL WHERE id = ?",
                (msg_id,),
            )
            if cur.rowcount == 0:
                raise NotFound(msg_id)

        await self._writer.run(write)

    async def set_state(self, msg_id: str, state: str) -> None:
        def write(conn: sqlite3.Connection) -> None:
            cur = conn.execute("UPDATE messages SET state = ? WHERE id = ?", (state, msg_id))
            if cur.rowcount == 0:
                raise NotFound(msg_id)

        await self._writer.run(write)

    # ------------------------------------------------------------------ reads

    async def get_envelope(self, msg_id: str) -> dict[str, Any]:
        row = await self._read_one("SELECT envelope, sealed FROM messages WHERE id = ?", (msg_id,))
        if row is None:
            raise NotFound(msg_id)
        if row["envelope"] is None:
            return {}
        return self.codec.open_envelope(msg_id, row["envelope"], row["sealed"])

    async def get_message_row(self, msg_id: str) -> dict[str, Any]:
        row = await self._read_one(
            "SELECT id, received_at, tenant, mail_from, rcpt_to, client_ip, helo, tls, trace_id,"
            " auth, size, state, attempts, last_error, processed_at, subject, envelope, sealed"
            " FROM messages WHERE id = ?",
            (msg_id,),
        )
        if row is None:
            raise NotFound(msg_id)
        out = row_dict(self.codec.open_columns(msg_id, row))
        out["rcpt_to"] = json.loads(out["rcpt_to"])
        out["tls"] = bool(out["tls"])
        out["auth"] = json.loads(out["auth"]) if out["auth"] else None
        sealed = out.pop("sealed")
        out["envelope"] = (
            self.codec.open_envelope(msg_id, out["envelope"], sealed) if out["envelope"] else None
        )
        return out

    async def get_raw(self, msg_id: str) -> bytes:
        row = await self._read_one("SELECT raw FROM message_raw WHERE id = ?", (msg_id,))
        if row is None:
            raise NotFound(msg_id)
        return self.codec.open_raw(msg_id, bytes(row["raw"]))

    async def list_messages(
        self, *, limit: int = 50, state: str | None = None, tenant: str | None = None
    ) -> list[MessageSummary]:
        where, params = [], []
        if state:
            where.append("state = ?")
            params.append(state)
        if tenant:
            where.append("tenant = ?")
            params.append(tenant)
        sql = (
            "SELECT id, received_at, tenant, mail_from, rcpt_to, size, state, subject, attempts,"
            " last_error FROM messages"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        rows = await self._read(sql, [*params, limit])
        return [message_summary(self.codec.open_columns(r["id"], r)) for r in rows]

    async def count_by_state(self) -> dict[str, int]:
        rows = await self._read("SELECT state, COUNT(*) AS n FROM messages GROUP BY state")
        return {r["state"]: r["n"] for r in rows}

    async def ping(self) -> bool:
        """True when the database answers a read (``/readyz``)."""
        try:
            await self._read("SELECT 1")
        except (sqlite3.Error, StoreError):
            return False
        return True
