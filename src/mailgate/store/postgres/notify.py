"""The PostgreSQL notifier: ``LISTEN``/``NOTIFY`` between nodes.

A write that makes work ready runs ``pg_notify('mailgate_<channel>', '')`` in its
transaction; PostgreSQL delivers it at COMMIT to every listening session, on every node. One
connection per store listens and calls the subscribers (thread-safe callbacks, see
``store.notify.Notifier``). A notification lost while the connection was down only delays
work: workers also poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

import asyncpg

from mailgate.logs import get_logger
from mailgate.store.base import StoreError
from mailgate.store.notify import CHANNELS

log = get_logger("store.postgres")
PREFIX = "mailgate_"


def pg_channel(channel: str) -> str:
    return PREFIX + channel


class PgNotifier:
    """``store.notify.Notifier`` over one listening connection."""

    def __init__(self) -> None:
        self._subs: dict[str, set[Callable[[], None]]] = {c: set() for c in CHANNELS}
        self._lock = threading.Lock()
        self._conn: asyncpg.Connection | None = None
        self._connect: Callable[[], Any] | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._stopped = False
        self.reconnects = 0
        self.fired: dict[str, int] = dict.fromkeys(CHANNELS, 0)  # wake-ups seen per channel

    def subscribe(self, channel: str, fn: Callable[[], None]) -> None:
        with self._lock:
            self._subs.setdefault(channel, set()).add(fn)

    def unsubscribe(self, channel: str, fn: Callable[[], None]) -> None:
        with self._lock:
            self._subs.get(channel, set()).discard(fn)

    def fire(self, channel: str) -> None:
        """Run the subscribers of ``channel`` (also used for wake-ups within this process)."""
        with self._lock:
            fns = list(self._subs.get(channel, ()))
            self.fired[channel] = self.fired.get(channel, 0) + 1
        for fn in fns:
            try:
                fn()
            except RuntimeError:
                pass  # a worker whose loop already closed

    async def start(self, connect: Callable[[], Any]) -> None:
        self._connect = connect
        self._stopped = False
        await self._listen()

    async def _listen(self) -> None:
        if self._connect is None:
            raise StoreError("notifier not started")
        conn = await self._connect()
        for channel in CHANNELS:
            await conn.add_listener(pg_channel(channel), self._on_notify)
        conn.add_termination_listener(self._on_lost)
        self._conn = conn

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        self.fire(channel.removeprefix(PREFIX))

    def _on_lost(self, conn: Any) -> None:
        """The listening connection closed (database restart, failover): listen again, with a
        growing pause, and wake every worker once — notifications sent meanwhile are lost."""
        if self._stopped or self._reconnecting is not None:
            return
        log.warning("store notifications lost: reconnecting")
        self._reconnecting = asyncio.ensure_future(self._reconnect())

    async def _reconnect(self) -> None:
        delay = 0.5
        try:
            while not self._stopped:
                try:
                    await self._listen()
                except (OSError, asyncpg.PostgresError, StoreError):
                    await asyncio.sleep(delay)
                    delay = min(30.0, delay * 2)
                    continue
                self.reconnects += 1
                for channel in CHANNELS:
                    self.fire(channel)
                return
        finally:
            self._reconnecting = None

    async def stop(self) -> None:
        self._stopped = True
        task, self._reconnecting = self._reconnecting, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
