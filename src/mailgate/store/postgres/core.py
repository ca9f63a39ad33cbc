"""``PostgresStore``: the spool, claims with leases, completion; composed with the area mixins.

* **Spool**: records of concurrent DATA commands share one transaction (``GroupCommit``); the
  call returns after that COMMIT (``synchronous_commit = on``), then the front says 250. The
  tenant's ticket number is taken under the tenant's counter row lock in that transaction.
* **Claims**: ``FOR UPDATE SKIP LOCKED`` over spooled rows without a live lease, then the lease
  (owner, expiry) in the same statement: two nodes never take one row, and a node that died
  leaves its rows to the others when the lease runs out.
* **Complete**: the envelope, the state and every intent in one transaction, only while the
  row is still spooled (a run whose lease was taken over and finished elsewhere writes nothing).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from mailgate.store.base import (
    Intent,
    MessageSummary,
    NotFound,
    SpooledMessage,
    SpoolRecord,
    StoreError,
)
from mailgate.store.message_logic import message_summary, spooled_message
from mailgate.store.notify import SPOOL
from mailgate.store.ports import DEFAULT_SPOOL_LEASE, SchemaStatus
from mailgate.store.postgres import schema
from mailgate.store.postgres.base import PgBase, apply_intents, dumps, rowcount, text
from mailgate.store.postgres.check import PgCheckMixin
from mailgate.store.postgres.delivery import PgDeliveryMixin
from mailgate.store.postgres.group_commit import GroupCommit
from mailgate.store.postgres.models import PgModelMixin
from mailgate.store.postgres.notify import PgNotifier, pg_channel
from mailgate.store.postgres.pipeline import PgPipelineMixin
from mailgate.store.postgres.replies import PgReplyMixin

COMPLETE_BATCH = 32
"""Completions one transaction takes at most (the ingest worker keeps up to 32 in flight)."""

SEQ_CACHE = 10_000

_SPOOLED_COLUMNS = (
    "m.id, m.received_at, m.tenant, m.mail_from, m.rcpt_to, m.client_ip, m.helo, m.tls,"
    " m.trace_id, m.auth, m.attempts"
)


@dataclass
class _Completion:
    """One ``complete`` call waiting for its batch's transaction."""

    msg_id: str
    envelope: dict[str, Any]
    intents: list[Intent]
    state: str
    done: asyncio.Future[None]


def _settle(fut: asyncio.Future[None], exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is None:
        fut.set_result(None)
    else:
        fut.set_exception(exc)


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Pool connections need no reset on release: mailgate takes no session-level advisory
    locks, opens no cursors outside a transaction, LISTENs on a connection of its own and sets
    nothing per session. asyncpg's default reset is one more round trip per query."""


class PostgresStore(
    PgPipelineMixin, PgDeliveryMixin, PgReplyMixin, PgModelMixin, PgCheckMixin, PgBase
):
    """See the module docstring and ``store.ports`` for the protocols this implements."""

    def __init__(
        self,
        dsn: str,
        *,
        node: str = "",
        migrate: bool = True,
        min_connections: int = 1,
        max_connections: int = 6,
        max_batch: int = 256,
    ) -> None:
        self.dsn = dsn
        self.node = node or socket.gethostname()
        self.auto_migrate = migrate
        self.min_connections = min_connections
        self.max_connections = max_connections
        self._pool = None
        self._fast_pool = None
        self.notifier = PgNotifier()
        self._spools: GroupCommit[SpoolRecord] = GroupCommit(self._spool_batch, max_batch=max_batch)
        # completions share transactions too (fewer commits and round trips per message)
        self._completions: GroupCommit[_Completion] = GroupCommit(
            self._complete_batch, max_batch=COMPLETE_BATCH, parallel=1
        )
        self._delivered = GroupCommit(self._record_delivered, max_batch=64, parallel=1)
        self._seqs: dict[str, int] = {}  # claimed messages' ticket numbers (``message_seq``)

    # ------------------------------------------------------------------ lifecycle

    async def _connect(self) -> asyncpg.Connection:
        try:
            conn: asyncpg.Connection = await asyncpg.connect(
                self.dsn, server_settings=self._settings()
            )
        except (asyncpg.PostgresError, OSError) as exc:
            raise StoreError(f"cannot connect to the store database: {exc}") from exc
        return conn

    def _settings(self, *, durable: bool = True) -> dict[str, str]:
        # the 250 waits for the commit to be durable, whatever the server's default says;
        # ``durable=False``: see ``PgBase`` (writes whose loss only repeats work)
        return {
            "synchronous_commit": "on" if durable else "off",
            "application_name": f"mailgate:{self.node}"[:63],
        }

    async def schema_status(self) -> SchemaStatus:
        conn = await self._connect()
        try:
            return await schema.status(conn)
        finally:
            await conn.close()

    async def migrate(self) -> list[str]:
        conn = await self._connect()
        try:
            return await schema.migrate(conn)
        finally:
            await conn.close()

    async def prepare(self) -> list[str]:
        """Migrate (or check the schema when ``migrate`` is off) before serving."""
        if self.auto_migrate:
            return await self.migrate()
        st = await self.schema_status()
        if st.newer:
            raise StoreError(
                f"the database schema is version {st.current}, newer than this mailgate"
                f" knows ({st.latest})"
            )
        if st.pending:
            raise StoreError(
                f"the database schema lacks {', '.join(st.pending)}: run `mailgate db migrate`"
            )
        return []

    async def open(self) -> None:
        await self.prepare()
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=self.min_connections,
                # the spool's group commit runs two flushes at a time; the rest is operator work
                max_size=max(2, self.max_connections // 2),
                server_settings=self._settings(),
                reset=_no_reset,
            )
            self._fast_pool = await asyncpg.create_pool(
                self.dsn,
                min_size=self.min_connections,
                max_size=self.max_connections,
                server_settings=self._settings(durable=False),
                reset=_no_reset,
            )
        except (asyncpg.PostgresError, OSError) as exc:
            raise StoreError(f"cannot connect to the store database: {exc}") from exc
        await self.notifier.start(self._connect)

    async def close(self) -> None:
        await self.notifier.stop()
        for pool in (self._pool, self._fast_pool):
            if pool is not None:
                await pool.close()
        self._pool = self._fast_pool = None

    async def __aenter__(self) -> PostgresStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def shared_secret(self, name: str) -> str:
        """A random secret every node reads alike (created once, by whichever node asks first)."""
        await self._execute(
            "INSERT INTO shared_secrets (name, value, created_at) VALUES ($1, $2, $3)"
            " ON CONFLICT (name) DO NOTHING",
            name,
            secrets.token_urlsafe(32).encode("ascii"),
            time.time(),
        )
        row = await self._fetchrow("SELECT value FROM shared_secrets WHERE name = $1", name)
        if row is None:  # pragma: no cover - inserted just above
            raise StoreError(f"shared secret {name} missing")
        return bytes(row["value"]).decode("ascii")

    async def ping(self) -> bool:
        try:
            await self._fetch("SELECT 1")
        except StoreError:
            return False
        return True

    # ------------------------------------------------------------------ spool (SMTP side)

    async def spool(self, *records: SpoolRecord) -> None:
        """See `Spool.spool`: returns after the COMMIT that holds these records (all or none)."""
        if records:
            await self._spools.submit(*records)

    async def _spool_batch(self, records: list[SpoolRecord]) -> None:
        rows = [
            (
                r.id,
                r.received_at,
                r.tenant,
                text(r.mail_from) or "",
                dumps(r.rcpt_to),
                r.client_ip,
                text(r.helo) or "",
                r.tls,
                r.trace_id,
                dumps(r.auth) if r.auth is not None else None,
                dumps(r.smtp) if r.smtp else None,
                len(r.raw),
            )
            for r in records
        ]
        per_tenant: dict[str, list[str]] = {}
        for r in records:
            per_tenant.setdefault(r.tenant, []).append(r.id)
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.executemany(
                    "INSERT INTO messages (id, received_at, tenant, mail_from, rcpt_to, client_ip,"
                    " helo, tls, trace_id, auth, smtp, size)"
                    " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)",
                    rows,
                )
                await conn.executemany(
                    "INSERT INTO message_raw (id, raw) VALUES ($1, $2)",
                    [(r.id, r.raw) for r in records],
                )
                # Ticket numbers last: the counter row lock is held for the shortest time.
                for tenant in sorted(per_tenant):
                    ids = per_tenant[tenant]
                    last = await conn.fetchval(
                        "INSERT INTO ticket_counters (tenant, last) VALUES ($1, $2)"
                        " ON CONFLICT (tenant) DO UPDATE SET last = ticket_counters.last + $2"
                        " RETURNING last",
                        tenant,
                        len(ids),
                    )
                    first = int(last) - len(ids) + 1
                    await conn.execute(
                        "UPDATE messages m SET tenant_seq = $1 + x.n - 1"
                        " FROM unnest($2::text[]) WITH ORDINALITY AS x(id, n) WHERE m.id = x.id",
                        first,
                        ids,
                    )
                await conn.execute("SELECT pg_notify($1, '')", pg_channel(SPOOL))
        except (asyncpg.PostgresError, OSError) as exc:
            raise StoreError(f"spool failed: {exc}") from exc

    # ------------------------------------------------------------------ claims

    async def claim_spooled(
        self, limit: int, *, owner: str, lease: float = DEFAULT_SPOOL_LEASE, skip: int = 0
    ) -> list[SpooledMessage]:
        """See `SpoolClaims.claim_spooled`."""
        now = time.time()
        rows = await self._fetch(
            "WITH c AS (SELECT seq FROM messages WHERE state = 'spooled'"
            " AND (lease_until IS NULL OR lease_until < $1) ORDER BY seq LIMIT $2 OFFSET $5"
            " FOR UPDATE SKIP LOCKED)"
            " UPDATE messages m SET lease_owner = $3, lease_until = $4 FROM c, message_raw r"
            f" WHERE m.seq = c.seq AND r.id = m.id RETURNING m.seq, {_SPOOLED_COLUMNS}, r.raw,"
            " COALESCE(m.tenant_seq, m.seq) AS ticket_seq",
            now,
            limit,
            owner,
            now + lease,
            skip,
            fast=True,
        )
        rows = sorted(rows, key=lambda r: r["seq"])
        if len(self._seqs) > SEQ_CACHE:
            self._seqs.clear()  # entries of messages whose run never asked (a bound, not a policy)
        for r in rows:
            self._seqs[r["id"]] = int(r["ticket_seq"])
        return [spooled_message(r) for r in rows]

    async def release_spool_leases(self, owner: str) -> int:
        status = await self._execute(
            "UPDATE messages SET lease_owner = NULL, lease_until = NULL"
            " WHERE lease_owner = $1 AND state = 'spooled'",
            owner,
        )
        return rowcount(status)

    async def spool_lease_owners(self) -> list[str]:
        rows = await self._fetch(
            "SELECT DISTINCT lease_owner FROM messages WHERE state = 'spooled'"
            " AND lease_owner IS NOT NULL AND lease_until >= $1",
            time.time(),
        )
        return [r[0] for r in rows]

    # ------------------------------------------------------------------ ingest side

    async def complete(
        self,
        msg_id: str,
        envelope: dict[str, Any],
        intents: list[Intent],
        *,
        state: str = "processed",
    ) -> None:
        """See `MessageStore.complete`. Completions in flight at once (the worker pipelines
        them) share one transaction (``_complete_batch``); each caller learns its own outcome."""
        job = _Completion(
            msg_id, envelope, intents, state, asyncio.get_running_loop().create_future()
        )
        await self._completions.submit(job)
        await job.done

    async def _complete_batch(self, jobs: list[_Completion]) -> None:
        """One transaction for the whole batch; if any message fails in it (a dedup or thread
        conflict, a deadlock with another node), the batch is rolled back and each message is
        completed alone, so one message's conflict never costs another its commit."""
        if len(jobs) > 1:
            try:
                async with self.fast_pool.acquire() as conn, conn.transaction():
                    for job in jobs:
                        await self._complete_in(conn, job)
            except (asyncpg.PostgresError, StoreError, OSError):
                pass  # each alone, below: every message gets its own outcome
            else:
                for job in jobs:
                    _settle(job.done, None)
                return
        for job in jobs:
            try:
                async with self.fast_pool.acquire() as conn, conn.transaction():
                    await self._complete_in(conn, job)
            except (asyncpg.PostgresError, OSError) as exc:
                _settle(job.done, StoreError(f"complete failed: {exc}"))
            except Exception as exc:
                _settle(job.done, exc)
            else:
                _settle(job.done, None)

    async def _complete_in(self, conn: asyncpg.Connection, job: _Completion) -> None:
        # one statement: only a still-spooled row changes (the row lock orders two nodes
        # finishing the same message after a lease takeover: the second no-ops)
        done = await conn.fetchval(
            "UPDATE messages SET state = $1, envelope = $2, subject = $3,"
            " processed_at = $4, last_error = NULL, processed_by = lease_owner,"
            " lease_owner = NULL, lease_until = NULL WHERE id = $5 AND state = 'spooled'"
            " RETURNING 1",
            job.state,
            dumps(job.envelope),
            text(job.envelope.get("subject")),
            time.time(),
            job.msg_id,
        )
        if not done:
            if not await conn.fetchval("SELECT 1 FROM messages WHERE id = $1", job.msg_id):
                raise NotFound(job.msg_id)
            return  # already completed (here or by another node): write nothing twice
        await apply_intents(conn, job.msg_id, job.envelope, job.intents)

    async def fail(self, msg_id: str, error: str, *, max_attempts: int) -> str:
        """See `MessageStore.fail`."""
        row = await self._fetchrow(
            "UPDATE messages SET attempts = attempts + 1, last_error = $2,"
            " state = CASE WHEN attempts + 1 >= $3 THEN 'dead' ELSE 'spooled' END,"
            " lease_owner = NULL, lease_until = NULL WHERE id = $1 AND state = 'spooled'"
            " RETURNING state",
            msg_id,
            text(error[:2000]),
            max_attempts,
        )
        if row is None:
            current = await self._fetchrow("SELECT state FROM messages WHERE id = $1", msg_id)
            if current is None:
                raise NotFound(msg_id)
            return str(current["state"])
        return str(row["state"])

    async def requeue(self, msg_id: str) -> None:
        status = await self._execute(
            "UPDATE messages SET state = 'spooled', attempts = 0, last_error = NULL,"
            " lease_owner = NULL, lease_until = NULL WHERE id = $1",
            msg_id,
        )
        if rowcount(status) == 0:
            raise NotFound(msg_id)

    async def set_state(self, msg_id: str, state: str) -> None:
        status = await self._execute("UPDATE messages SET state = $1 WHERE id = $2", state, msg_id)
        if rowcount(status) == 0:
            raise NotFound(msg_id)

    # ------------------------------------------------------------------ reads

    async def get_envelope(self, msg_id: str) -> dict[str, Any]:
        row = await self._fetchrow("SELECT envelope FROM messages WHERE id = $1", msg_id)
        if row is None:
            raise NotFound(msg_id)
        if row["envelope"] is None:
            return {}
        env: dict[str, Any] = json.loads(row["envelope"])
        return env

    async def get_message_row(self, msg_id: str) -> dict[str, Any]:
        row = await self._fetchrow(
            "SELECT id, received_at, tenant, mail_from, rcpt_to, client_ip, helo, tls, trace_id,"
            " auth, size, state, attempts, last_error, processed_at, subject, envelope"
            " FROM messages WHERE id = $1",
            msg_id,
        )
        if row is None:
            raise NotFound(msg_id)
        out = dict(row)
        out["rcpt_to"] = json.loads(out["rcpt_to"])
        out["tls"] = bool(out["tls"])
        out["auth"] = json.loads(out["auth"]) if out["auth"] else None
        out["envelope"] = json.loads(out["envelope"]) if out["envelope"] else None
        return out

    async def get_raw(self, msg_id: str) -> bytes:
        row = await self._fetchrow("SELECT raw FROM message_raw WHERE id = $1", msg_id)
        if row is None:
            raise NotFound(msg_id)
        return bytes(row["raw"])

    async def list_messages(
        self, *, limit: int = 50, state: str | None = None, tenant: str | None = None
    ) -> list[MessageSummary]:
        rows = await self._fetch(
            "SELECT id, received_at, tenant, mail_from, rcpt_to, size, state, subject, attempts,"
            " last_error FROM messages WHERE ($1::text IS NULL OR state = $1)"
            " AND ($2::text IS NULL OR tenant = $2) ORDER BY seq DESC LIMIT $3",
            state,
            tenant,
            limit,
        )
        return [message_summary(r) for r in rows]

    async def count_by_state(self) -> dict[str, int]:
        rows = await self._fetch("SELECT state, COUNT(*) AS n FROM messages GROUP BY state")
        return {r["state"]: int(r["n"]) for r in rows}
