"""Group commit of spools: concurrent DATA commands share one PostgreSQL transaction.

Each ``submit`` waits for the COMMIT that holds its records (then the SMTP front says 250). While
a commit is in flight, new submissions queue; the next flush takes all of them (up to
``max_batch`` records) in one transaction, so N concurrent sessions cost far fewer than N
commits (and N WAL flushes). ``parallel`` flushes may run at once: PostgreSQL then also groups
their WAL flushes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupCommit(Generic[T]):
    def __init__(
        self,
        flush: Callable[[list[T]], Awaitable[None]],
        *,
        max_batch: int = 256,
        parallel: int = 2,
    ) -> None:
        self._flush = flush
        self.max_batch = max(1, max_batch)
        self.parallel = max(1, parallel)
        self._queue: list[tuple[tuple[T, ...], asyncio.Future[None]]] = []
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.commits = 0  # transactions flushed (for the bench: records per commit)

    async def submit(self, *items: T) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((items, fut))
        if self._running < self.parallel:
            self._running += 1
            task = asyncio.ensure_future(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await fut

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch: list[tuple[tuple[T, ...], asyncio.Future[None]]] = []
                count = 0
                while self._queue and (
                    not batch or count + len(self._queue[0][0]) <= self.max_batch
                ):
                    entry = self._queue.pop(0)
                    batch.append(entry)
                    count += len(entry[0])
                items = [item for entry in batch for item in entry[0]]
                try:
                    await self._flush(items)
                except BaseException as exc:  # every waiter learns; the next batch goes on
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                self.commits += 1
                for _, fut in batch:
                    if not fut.done():
                        fut.set_result(None)
        finally:
            self._running -= 1
