"""The SQLite backend's notifier: in-process callbacks run by the writer after a commit.

One node, one process tree: the SMTP front wakes its inline worker directly, and the appliers
of ``sqlite_delivery`` / ``sqlite_replies`` wake the webhook and reply workers of the process
that committed. Workers in other processes poll (``change_counter``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from mailgate.store.ports import OUTBOX, REPLIES
from mailgate.store.sqlite_base import Wakers
from mailgate.store.sqlite_delivery import add_outbox_waker, remove_outbox_waker
from mailgate.store.sqlite_replies import add_reply_waker, remove_reply_waker


class SqliteNotifier:
    """``store.ports.Notifier`` over the writer's per-area waker sets."""

    def __init__(self) -> None:
        self._other: dict[str, Wakers] = {}
        self._lock = threading.Lock()

    def subscribe(self, channel: str, fn: Callable[[], None]) -> None:
        if channel == OUTBOX:
            add_outbox_waker(fn)
        elif channel == REPLIES:
            add_reply_waker(fn)
        else:
            self._wakers(channel).add(fn)

    def unsubscribe(self, channel: str, fn: Callable[[], None]) -> None:
        if channel == OUTBOX:
            remove_outbox_waker(fn)
        elif channel == REPLIES:
            remove_reply_waker(fn)
        else:
            self._wakers(channel).remove(fn)

    def notify(self, channel: str) -> None:
        """Wake the subscribers of a channel the appliers do not cover (e.g. ``spool``)."""
        self._wakers(channel).wake()

    def _wakers(self, channel: str) -> Wakers:
        with self._lock:
            return self._other.setdefault(channel, Wakers())
