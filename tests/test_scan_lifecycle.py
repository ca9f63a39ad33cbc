"""Stage lifecycle: factories, start/stop order, on_error for any exception, CPU work under the
timeout, prefetched calls (pipeline/lifecycle.py)."""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

import pytest

from mailgate.config import Config, PipelineConfig
from mailgate.pipeline.base import Context, Verdict
from mailgate.pipeline.lifecycle import (
    Ahead,
    Guarded,
    Services,
    StageDeferred,
    StageSet,
    build_stage,
    in_thread,
)
from mailgate.pipeline.rules import load_rules
from mailgate.pipeline.runner import EmptyPorts, PipelineRunner, StageTimeout
from mailgate.pipeline.stages import registry

EVENTS: list[str] = []


class _Built:
    """A stage with a factory and a failure policy."""

    name = "built"
    description = "test stage"

    def __init__(self, tag: str, on_error: str) -> None:
        self.tag = tag
        self.on_error = on_error

    @classmethod
    def build(cls, cfg: Config, services: Services) -> _Built:
        return cls(cfg.pipeline.default_queue, "quarantine")

    async def run(self, env: Any, ctx: Context) -> Verdict | None:
        raise ValueError("engine said nonsense")


def _ctx(cfg: Config) -> Context:
    return Context(
        config=cfg.pipeline, root=cfg, ports=EmptyPorts(), rules=load_rules(cfg), msg_id="m1"
    )


async def test_factory_builds_and_guards() -> None:
    cfg = Config(pipeline=PipelineConfig(default_queue="support"))
    stage = build_stage(_Built("default", "defer"), cfg, Services())
    assert isinstance(stage, Guarded) and stage.inner.tag == "support"
    ctx = _ctx(cfg)
    assert await stage.run({}, ctx) is None  # quarantine policy: held, not raised
    [held] = ctx.quarantine
    assert held.reason == "built-error" and "ValueError: engine said nonsense" in held.detail
    # a stage without build is the registered instance itself
    assert build_stage(registry()["dedup"], cfg, Services()) is registry()["dedup"]


async def test_defer_policy_raises_stage_deferred() -> None:
    stage = Guarded(_Built("x", "defer"))
    with pytest.raises(StageDeferred):
        await stage.run({}, _ctx(Config()))


class _Life:
    """A stage without a factory (the registered instance is used) but with start/stop."""

    description = "lifecycle only"

    def __init__(self, name: str, fail_start: bool = False) -> None:
        self.name = name
        self.fail_start = fail_start

    async def start(self) -> None:
        if self.fail_start:
            raise RuntimeError("cannot start")
        EVENTS.append(f"start {self.name}")

    async def stop(self) -> None:
        EVENTS.append(f"stop {self.name}")

    async def run(self, env: Any, ctx: Context) -> Verdict | None:
        return None


async def test_start_in_order_stop_in_reverse_and_rollback() -> None:
    EVENTS.clear()
    a, b = _Life("a"), _Life("b")
    cfg = Config(pipeline=PipelineConfig(stages=["a", "b", "quarantine"]))
    stages = StageSet(cfg, Services(), {"a": a, "b": b, "quarantine": registry()["quarantine"]})
    await stages.start()
    await stages.stop()
    assert EVENTS == ["start a", "start b", "stop b", "stop a"]

    EVENTS.clear()
    bad = _Life("c", fail_start=True)
    cfg = Config(pipeline=PipelineConfig(stages=["a", "c", "quarantine"]))
    stages = StageSet(cfg, Services(), {"a": a, "c": bad, "quarantine": registry()["quarantine"]})
    with pytest.raises(RuntimeError):
        await stages.start()
    assert EVENTS == ["start a", "stop a"]  # what started is stopped again


class _Busy:
    name = "busy"
    description = "CPU-bound work"

    def __init__(self, offload: bool) -> None:
        self.offload = offload

    async def run(self, env: Any, ctx: Context) -> Verdict | None:
        await asyncio.sleep(0)  # a first suspension, like a stage that did some I/O

        def spin() -> None:
            end = time.perf_counter() + 1.0
            while time.perf_counter() < end:
                pass

        if self.offload:
            await in_thread(spin)
        else:
            spin()
        return None


@pytest.mark.parametrize("offload", [True, False])
async def test_cpu_work_in_thread_is_under_the_timeout(offload: bool) -> None:
    """The runner's timeout reaches CPU work only when it is awaited from a thread."""
    cfg = Config(pipeline=PipelineConfig(stages=["busy", "quarantine"], stage_timeout=0.2))
    runner = PipelineRunner(cfg, EmptyPorts(), stages={**registry(), "busy": _Busy(offload)})
    started = time.perf_counter()
    if offload:
        with pytest.raises(StageTimeout):
            await runner.process({"id": "m1"})  # type: ignore[typeddict-item]
        assert time.perf_counter() - started < 0.8
    else:
        await runner.process({"id": "m1"})  # type: ignore[typeddict-item]
        assert time.perf_counter() - started >= 1.0  # ran to the end: nothing could stop it


async def test_ahead_bounds_takes_and_clears() -> None:
    running = 0
    peak = 0

    async def call(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        if i == 3:
            raise ValueError("three")
        return i

    ahead = Ahead(limit=2)
    for i in range(6):
        ahead.start(f"m{i}", functools.partial(call, i))
    first = ahead.take("m0")
    assert first is not None and await first == 0
    three = ahead.take("m3")
    assert three is not None
    with pytest.raises(ValueError):
        await three
    assert ahead.take("m0") is None  # taken once
    ahead.clear()  # m1, m2, m4, m5 nobody took: cancelled, no "never retrieved" warnings
    await asyncio.sleep(0.05)
    assert peak == 2
