"""The PostgreSQL notifier: NOTIFY from one store reaches another's subscribers, and a lost
listening connection (database restart, failover) is re-established (issue 13)."""

from __future__ import annotations

import asyncio

import asyncpg

from mailgate.store.notify import OUTBOX, SPOOL
from mailgate.store.postgres import PostgresStore
from mailgate.store.postgres.notify import pg_channel


async def test_notifications_cross_stores_and_survive_a_lost_connection(pg_dsn: str) -> None:
    a, b = PostgresStore(pg_dsn, node="a"), PostgresStore(pg_dsn, node="b")
    await a.open()
    await b.open()
    try:
        loop = asyncio.get_running_loop()
        heard: asyncio.Queue[str] = asyncio.Queue()
        b.notifier.subscribe(SPOOL, lambda: loop.call_soon_threadsafe(heard.put_nowait, SPOOL))
        b.notifier.subscribe(OUTBOX, lambda: loop.call_soon_threadsafe(heard.put_nowait, OUTBOX))
        await a._execute("SELECT pg_notify($1, '')", pg_channel(SPOOL))
        assert await asyncio.wait_for(heard.get(), 5) == SPOOL
        # the database drops b's listening session (as a restart or a failover would)
        conn = await asyncpg.connect(pg_dsn)
        try:
            killed = await conn.fetchval(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
                " AND application_name = 'mailgate:b'"
            )
        finally:
            await conn.close()
        assert killed == 1
        for _ in range(100):  # bounded: the first retry comes at once
            if b.notifier.reconnects:
                break
            await asyncio.sleep(0.05)
        assert b.notifier.reconnects == 1
        while not heard.empty():  # the catch-up wake-up after reconnecting
            heard.get_nowait()
        await a._execute("SELECT pg_notify($1, '')", pg_channel(OUTBOX))
        assert await asyncio.wait_for(heard.get(), 5) == OUTBOX
    finally:
        await a.close()
        await b.close()
