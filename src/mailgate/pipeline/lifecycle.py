"""Stage lifecycle: built by a factory, started and stopped with the worker, a failure policy.

A stage that holds something — a connection pool, a loaded model, a client for a daemon —
is built per worker by its class's ``build(cfg, services) -> Stage`` from the whole config
and the `Services` the composition root hands over (constructor injection: the stage never
reaches for a global). It may define ``async start()`` (open pools, fail fast on a bad
setting) and ``async stop()``; `StageSet` calls them when the worker starts and stops. A
stage without ``build`` is its module's ``STAGE`` singleton (the default factory), so the
existing stages need no change.

A stage that talks to something that can fail declares ``on_error``:

``defer``       raise `StageDeferred`: the run fails, the ingest worker retries the message with
                backoff and dead-letters it after ``pipeline.max_attempts`` (nothing half-checked
                is delivered);
``continue``    the stage records the error in its envelope field and the run goes on;
``quarantine``  the message is held with the reason ``<stage>-error`` and the error as detail.

`apply_policy` is that decision for an error the stage caught itself; `Guarded` applies it
to any other exception the stage raises. CPU-heavy work goes through `in_thread`: the runner's
``asyncio.timeout`` can only fire at an ``await``, never inside a synchronous loop, so work
that may take long must be awaited from a thread to stay under the stage timeout.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from mailgate.config import Config, OnError
from mailgate.envelope import Envelope
from mailgate.pipeline.base import Context, Quarantine, Stage, Verdict
from mailgate.store.base import SpooledMessage
from mailgate.store.models import ModelSource

log = logging.getLogger("mailgate.pipeline")

T = TypeVar("T")
RawSource = Callable[[str], Awaitable[bytes]]
"""msg_id -> the raw message as received (the spool keeps it until the message is done)."""


class StageDeferred(Exception):
    """A stage with ``on_error = "defer"`` could not decide: retry the message later."""


@dataclass(frozen=True)
class Services:
    """What the composition root lends to stage factories (all optional: tests build less)."""

    raw_message: RawSource | None = None
    models: ModelSource | None = None
    """The stored routing models (``classify`` polls which version is active)."""


def apply_policy(
    policy: OnError, stage: str, error: str, ctx: Context, *, permanent: bool = False
) -> Verdict | None:
    """Act on a stage failure as its ``on_error`` says (see the module docstring).

    ``permanent``: retrying cannot help (a message over the engine's size limit), so ``defer``
    holds it in quarantine instead of burning every attempt and dead-lettering it.
    """
    if policy == "defer" and not permanent:
        ctx.note(f"error: {error}; deferred")
        raise StageDeferred(f"{stage}: {error}")
    if policy == "continue":
        ctx.note(f"error: {error}; continuing")
        return None
    ctx.note(f"error: {error}; holding the message")
    ctx.quarantine.append(Quarantine(f"{stage}-error", error))
    return None


class Guarded:
    """Wraps a stage that declares ``on_error``: an exception it raises obeys that policy."""

    def __init__(self, stage: Any) -> None:
        self.inner = stage
        self.name: str = stage.name
        self.description: str = stage.description
        self.on_error: OnError = stage.on_error

    async def run(self, env: Envelope, ctx: Context) -> Verdict | None:
        try:
            result: Verdict | None = await self.inner.run(env, ctx)
        except StageDeferred:
            raise
        except Exception as exc:
            return apply_policy(self.on_error, self.name, f"{type(exc).__name__}: {exc}", ctx)
        return result

    def prefetch(self, batch: Sequence[SpooledMessage]) -> None:
        hook = getattr(self.inner, "prefetch", None)
        if hook is not None:
            hook(batch)

    async def start(self) -> None:
        start = getattr(self.inner, "start", None)
        if start is not None:
            await start()

    async def stop(self) -> None:
        stop = getattr(self.inner, "stop", None)
        if stop is not None:
            await stop()


def build_stage(default: Stage, cfg: Config, services: Services) -> Stage:
    """The stage's own ``build`` if it has one, else the registered instance; guarded when it
    declares ``on_error``."""
    factory = getattr(default, "build", None)
    stage: Stage = factory(cfg, services) if callable(factory) else default
    if getattr(stage, "on_error", None) in ("defer", "continue", "quarantine"):
        return Guarded(stage)
    return stage


class StageSet:
    """The configured stages built for one worker, started and stopped together."""

    def __init__(self, cfg: Config, services: Services, known: Mapping[str, Stage]) -> None:
        self.stages: dict[str, Stage] = {
            name: build_stage(known[name], cfg, services)
            for name in cfg.pipeline.stages
            if name in known
        }
        self._started: list[Stage] = []

    async def start(self) -> None:
        """Start every stage in pipeline order; if one fails, stop those already started."""
        for stage in self.stages.values():
            start = getattr(stage, "start", None)
            if start is None:
                continue
            try:
                await start()
            except BaseException:
                await self.stop()
                raise
            self._started.append(stage)

    async def stop(self) -> None:
        """Stop the started stages in reverse order; one failing stop does not skip the rest."""
        while self._started:
            stage = self._started.pop()
            stop = getattr(stage, "stop", None)
            if stop is None:
                continue
            try:
                await stop()
            except Exception:
                log.warning(
                    "stage stop failed", extra={"fields": {"stage": stage.name}}, exc_info=True
                )


class Ahead:
    """Engine calls started ahead of the run, one per message, at most ``limit`` at a time.

    The ingest worker runs a batch's messages one after the other (commits are pipelined, the
    pipeline is not), so a stage that waits ~3 ms on a daemon per message would cap a worker
    at a few hundred messages/s with the daemon mostly idle. `StagedProcessor.prefetch` hands
    the claimed batch to each stage, which starts its daemon calls here; ``run`` then takes the
    finished (or running) call for its message. A run without a prefetched call (replay,
    release, a test) makes the call itself.
    """

    def __init__(self, limit: int = 16) -> None:
        self.limit = limit
        self._sem: asyncio.Semaphore | None = None
        self._tasks: dict[str, asyncio.Future[Any]] = {}

    def start(self, key: str, call: Callable[[], Awaitable[Any]]) -> None:
        if key in self._tasks:
            return
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.limit)
        sem = self._sem

        async def bounded() -> Any:
            async with sem:
                return await call()

        task = asyncio.ensure_future(bounded())
        task.add_done_callback(_consume)
        self._tasks[key] = task

    def take(self, key: str) -> asyncio.Future[Any] | None:
        return self._tasks.pop(key, None)

    def clear(self) -> None:
        """Cancel calls nobody took (a message that failed before the stage ran)."""
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()


def _consume(task: asyncio.Future[Any]) -> None:
    """Mark an exception as seen: the stage re-raises it when it takes the call (or never)."""
    if not task.cancelled():
        task.exception()


class StagedProcessor:
    """The pipeline runner plus the batch hook the ingest worker calls (``prefetch``)."""

    def __init__(self, runner: Any, stages: StageSet) -> None:
        self.runner = runner
        self.stages = stages

    async def process(self, env: Envelope) -> Any:
        return await self.runner.process(env)

    def prefetch(self, batch: Sequence[SpooledMessage]) -> None:
        for stage in self.stages.stages.values():
            hook = getattr(stage, "prefetch", None)
            if hook is not None:
                hook(batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runner, name)


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run synchronous, CPU-heavy ``fn(*args)`` in the default executor.

    The await is where the stage timeout can cancel the run (the thread finishes on its own
    and its result is dropped); on the event loop it would block every other message.
    """
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, functools.partial(fn, *args))
