"""The PostgreSQL notifier: ``LISTEN``/``NOTIFY`` between nodes.

A write that makes work ready runs ``pg_notify('mailgate_<channel>', '')`` in its
transaction; PostgreSQL delivers it at COMMIT to every listening session, on every node. One
connection per store listens and calls the subscribers (thread-safe callbacks, see
``store.notify.Notifier``). A notification lost while the connection was down only delays
work: workers also poll.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import asyncpg

from mailgate.logs import get_logger
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
        for fn in fns:
            try:
                fn()
            except RuntimeError:
                pass  # a worker whose loop already closed

    async def start(self, connect: Callable[[], Any]) -> None:
        self._conn = await connect()
        for channel in CHANNELS:
            await self._conn.add_listener(pg_channel(channel), self._on_notify)

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        self.fire(channel.removeprefix(PREFIX))

    async def stop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
