"""Shared machinery of the PostgreSQL backend: the pool, intent appliers, JSON helpers.

Area modules (``pipeline``, ``delivery``) register an async applier per intent type with
``@applies(IntentType)``; ``complete()`` runs them in the transaction that stores the envelope,
exactly as the SQLite backend does with its own appliers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg

from mailgate import jsontext
from mailgate.store.base import Intent, StoreError

IntentT = TypeVar("IntentT", bound=Intent)
PgApplier = Callable[[asyncpg.Connection, str, dict[str, Any], Any], Awaitable[None]]
PG_APPLIERS: dict[type[Intent], PgApplier] = {}
PgBatchApplier = Callable[[asyncpg.Connection, str, dict[str, Any], list[Any]], Awaitable[None]]
PG_BATCH_APPLIERS: dict[type[Intent], PgBatchApplier] = {}


def applies(
    intent_type: type[IntentT],
) -> Callable[
    [Callable[[asyncpg.Connection, str, dict[str, Any], IntentT], Awaitable[None]]], PgApplier
]:
    """Register ``async fn(conn, msg_id, envelope, intent)`` as the SQL for one intent type."""

    def deco(
        fn: Callable[[asyncpg.Connection, str, dict[str, Any], IntentT], Awaitable[None]],
    ) -> PgApplier:
        PG_APPLIERS[intent_type] = fn
        return fn

    return deco


def applies_together(
    intent_type: type[IntentT],
) -> Callable[
    [Callable[[asyncpg.Connection, str, dict[str, Any], list[IntentT]], Awaitable[None]]],
    PgBatchApplier,
]:
    """Register ``async fn(conn, msg_id, envelope, intents)``: a message's run of consecutive
    intents of this type in one call (one round trip instead of one each)."""

    def deco(
        fn: Callable[[asyncpg.Connection, str, dict[str, Any], list[IntentT]], Awaitable[None]],
    ) -> PgBatchApplier:
        PG_BATCH_APPLIERS[intent_type] = fn
        return fn

    return deco


async def apply_intents(
    conn: asyncpg.Connection, msg_id: str, envelope: dict[str, Any], intents: Sequence[Intent]
) -> None:
    i = 0
    while i < len(intents):
        intent = intents[i]
        together = PG_BATCH_APPLIERS.get(type(intent))
        if together is not None:
            j = i
            while j < len(intents) and type(intents[j]) is type(intent):
                j += 1
            await together(conn, msg_id, envelope, list(intents[i:j]))
            i = j
            continue
        i += 1
        fn = PG_APPLIERS.get(type(intent))
        if fn is None:
            raise StoreError(f"no PostgreSQL applier for intent {type(intent).__name__}")
        await fn(conn, msg_id, envelope, intent)


dumps = jsontext.dumps  # the one compact encoder (orjson): see mailgate.jsontext


def text(value: Any) -> str | None:
    """A str PostgreSQL accepts: lone surrogates become U+FFFD, NUL is dropped."""
    if value is None:
        return None
    return str(value).encode("utf-8", "replace").decode("utf-8").replace("\x00", "")


class PgBase:
    """Two pools; area mixins build their methods on these helpers.

    ``pool`` commits durably (``synchronous_commit = on``): the spool (the 250 waits for it) and
    operator actions. ``fast_pool`` commits with ``synchronous_commit = off`` — the writes whose
    loss to a database crash only repeats work, exactly those SQLite commits without an fsync of
    their own: claims and leases, the processed envelope (the message stays spooled and is run
    again), delivery outcomes (webhooks are at-least-once, same ``webhook-id``).
    """

    _pool: asyncpg.Pool | None
    _fast_pool: asyncpg.Pool | None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("store is closed")
        return self._pool

    @property
    def fast_pool(self) -> asyncpg.Pool:
        if self._fast_pool is None:
            raise StoreError("store is closed")
        return self._fast_pool

    async def _fetch(self, sql: str, *args: Any, fast: bool = False) -> list[asyncpg.Record]:
        try:
            pool = self.fast_pool if fast else self.pool
            rows: list[asyncpg.Record] = await pool.fetch(sql, *args)
        except (asyncpg.PostgresError, OSError) as exc:
            raise StoreError(f"database: {exc}") from exc
        return rows

    async def _fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        rows = await self._fetch(sql, *args)
        return rows[0] if rows else None

    async def _execute(self, sql: str, *args: Any, fast: bool = False) -> str:
        try:
            status: str = await (self.fast_pool if fast else self.pool).execute(sql, *args)
        except (asyncpg.PostgresError, OSError) as exc:
            raise StoreError(f"database: {exc}") from exc
        return status


def rowcount(status: str) -> int:
    """The row count of a command tag such as ``UPDATE 3``."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0
