"""Retention: which duration applies to a message, what a purge removed, the background purger.

``[retention]`` gives one duration per kind of data (0 keeps it forever); ``[[retention.rules]]``
override them for a tenant, a queue or both, the most specific rule winning. The purge itself
is the store's (``store.sqlite_retention``); this module holds the parts without SQL, and the
``Purger`` service that ``serve`` runs in its first worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from mailgate.config import RetentionConfig
from mailgate.store.rows import Row

log = logging.getLogger("mailgate.retention")

MESSAGE_KINDS = ("raw", "envelopes", "attachments")
EVENT_KINDS = ("delivered_events", "dead_letters")
FIRST_RUN_DELAY = 5.0  # after start: let the worker settle, then purge what piled up


def duration_for(cfg: RetentionConfig, kind: str, tenant: str, queue: str | None) -> float:
    """The retention of ``kind`` for a message of ``tenant`` routed to ``queue`` (0: forever)."""
    best: float | None = None
    rank = -1
    for rule in cfg.rules:
        if (rule.tenant and rule.tenant != tenant) or (rule.queue and rule.queue != queue):
            continue
        value = getattr(rule, kind, None)
        if value is None:
            continue
        r = (2 if rule.queue else 0) + (1 if rule.tenant else 0)
        if r > rank:
            best, rank = float(value), r
    return best if best is not None else float(getattr(cfg, kind))


def shortest(cfg: RetentionConfig, kind: str) -> float:
    """The shortest positive duration of ``kind`` anywhere in the config (0: none is set)."""
    values = [float(getattr(cfg, kind))]
    values += [float(v) for r in cfg.rules if (v := getattr(r, kind, None)) is not None]
    positive = [v for v in values if v > 0]
    return min(positive) if positive else 0.0


def expired(cfg: RetentionConfig, kind: str, row: Row, stamp: str, at: float) -> bool:
    """Whether ``row`` (its ``tenant`` and ``queue``) is past ``kind``'s retention as of ``at``,
    reckoned from its ``stamp`` column (received, acknowledged, dead)."""
    queue = row["queue"] if isinstance(row["queue"], str) else None
    d = duration_for(cfg, kind, row["tenant"], queue)
    return d > 0 and row[stamp] < at - d


def message_cutoff(cfg: RetentionConfig, at: float, before: float | None) -> float | None:
    """Messages received before this may have something to purge; None: nothing can."""
    positive = [v for v in (shortest(cfg, k) for k in MESSAGE_KINDS) if v > 0]
    cutoff = at - min(positive) if positive else None
    if before is not None:
        cutoff = max(cutoff or before, before)
    return cutoff


def sort_expired(
    rows: Iterable[Row], cfg: RetentionConfig, at: float, before: float | None
) -> tuple[list[str], list[str], list[str]]:
    """The ids of ``rows`` (messages: ``id``, ``tenant``, ``queue``, ``received_at``,
    ``has_raw``, ``purged``) to delete whole (their envelope expired, or received before
    ``before``), to drop the raw MIME of, and to drop the attachments of."""
    whole: list[str] = []
    raw: list[str] = []
    atts: list[str] = []
    for r in rows:
        if (before is not None and r["received_at"] < before) or expired(
            cfg, "envelopes", r, "received_at", at
        ):
            whole.append(r["id"])
            continue
        if r["has_raw"] and expired(cfg, "raw", r, "received_at", at):
            raw.append(r["id"])
        if "attachments" not in (r["purged"] or "") and expired(
            cfg, "attachments", r, "received_at", at
        ):
            atts.append(r["id"])
    return whole, raw, atts


def enabled(cfg: RetentionConfig) -> bool:
    return any(shortest(cfg, k) for k in (*MESSAGE_KINDS, *EVENT_KINDS)) or cfg.audit > 0


@dataclass
class PurgeReport:
    """What a purge removed (or would remove, with ``dry_run``)."""

    dry_run: bool = False
    messages: int = 0  # deleted whole (their envelope expired, or --before)
    raw: int = 0  # raw MIME dropped, envelope kept
    attachments: int = 0  # messages whose attachments were dropped
    blobs: int = 0  # attachment files deleted
    blob_bytes: int = 0
    tombstones: int = 0  # dedup and thread index rows left for purged messages
    events: int = 0
    dead_letters: int = 0
    audit: int = 0
    pages_freed: int = 0  # incremental vacuum
    batches: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def removed(self) -> int:
        return (
            self.messages
            + self.raw
            + self.attachments
            + self.events
            + self.dead_letters
            + (self.audit)
        )

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def would_remove(self, whole: list[str], raw: list[str], atts: list[str]) -> None:
        """Count one batch of a dry run (a real run counts the rows it deleted)."""
        self.messages += len(whole)
        self.raw += len(raw)
        self.attachments += len(atts)


class Progress(Protocol):
    def __call__(self, done: int, total: int) -> None: ...


class RetentionStore(Protocol):
    async def purge(
        self,
        cfg: RetentionConfig,
        *,
        now: float | None = None,
        dry_run: bool = False,
        tenant: str | None = None,
        before: float | None = None,
        progress: Progress | None = None,
    ) -> PurgeReport: ...


class Purger:
    """Runs ``store.purge`` every ``[retention] interval`` (a worker service: start/stop)."""

    def __init__(self, store: RetentionStore, cfg: RetentionConfig) -> None:
        self.store = store
        self.cfg = cfg
        self._task: asyncio.Task[None] | None = None
        self.runs = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="retention-purger")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        delay = min(FIRST_RUN_DELAY, self.cfg.interval)
        while True:
            await asyncio.sleep(delay)
            delay = self.cfg.interval
            started = time.monotonic()
            try:
                report = await self.store.purge(self.cfg)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next run tries again; serving goes on
                log.warning(
                    "retention purge failed",
                    extra={"fields": {"error": f"{type(exc).__name__}: {exc}"}},
                )
                continue
            self.runs += 1
            if report.removed():
                fields: dict[str, Any] = {
                    k: v for k, v in report.as_dict().items() if isinstance(v, int) and v
                }
                fields["seconds"] = round(time.monotonic() - started, 3)
                log.info("retention purge", extra={"fields": fields})
