"""The notifier port: wake-ups from whoever committed work to the workers that do it.

Apart from ``store.ports`` so that the per-area protocols (``delivery``, ``replies``) can name
it without an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

# Notifier channels: what a committed write has made ready.
SPOOL = "spool"  # a message was spooled (ingest workers)
OUTBOX = "outbox"  # webhook outbox rows were added or became due (webhook workers)
REPLIES = "replies"  # auto-replies were queued (the SMTP reply sender)
CHANNELS = (SPOOL, OUTBOX, REPLIES)


class Notifier(Protocol):
    """Wake-ups from whoever committed work to the workers that do it.

    Callbacks may run on any thread (the SQLite writer thread, the PostgreSQL listener's
    connection): they must be thread-safe, e.g. ``loop.call_soon_threadsafe(event.set)``.
    A wake-up is a hint; workers still poll, so a lost one only delays work.
    """

    def subscribe(self, channel: str, fn: Callable[[], None]) -> None: ...

    def unsubscribe(self, channel: str, fn: Callable[[], None]) -> None: ...
