"""Values cached per live object must never be handed to another object (id reuse)."""

from __future__ import annotations

import gc
from pathlib import Path

from mailgate.per_object import PerObject
from mailgate.pipeline.runner import EmptyPorts
from mailgate.pipeline.stages.respond import RespondStage
from mailgate.store.sqlite import SqliteStore


class Thing:
    pass


def test_value_is_computed_once_per_object() -> None:
    cache: PerObject[Thing, int] = PerObject(limit=4)
    calls: list[Thing] = []

    def make(obj: Thing) -> int:
        calls.append(obj)
        return len(calls)

    a, b = Thing(), Thing()
    assert cache.get(a, make) == 1
    assert cache.get(a, make) == 1
    assert cache.get(b, make) == 2
    assert calls == [a, b]


def test_a_freed_object_never_lends_its_value_to_a_newcomer() -> None:
    cache: PerObject[Thing, str] = PerObject(limit=1000)
    seen_ids: dict[int, str] = {}
    reused = 0
    for i in range(300):
        obj = Thing()
        label = f"value-{i}"
        assert cache.get(obj, lambda _o, label=label: label) == label
        if id(obj) in seen_ids:
            reused += 1
        seen_ids[id(obj)] = label
        del obj
        gc.collect()
    # The cache keeps its objects alive, so no id is handed out twice while they are held.
    assert reused == 0
    assert len(cache) == 300


def test_limit_bounds_the_entries() -> None:
    cache: PerObject[Thing, int] = PerObject(limit=3)
    keep = [Thing() for _ in range(10)]
    for n, obj in enumerate(keep):
        cache.get(obj, lambda _o, n=n: n)
    assert len(cache) <= 3
    assert cache.get(keep[0], lambda _o: 99) == 99  # evicted, so computed again


def test_respond_stage_judges_each_ports_class_on_its_own(tmp_path: Path) -> None:
    """Regression: a store's ports (with the reply look-ups), then an EmptyPorts at a reused
    address, made the stage call reply_usage on EmptyPorts (the check was cached by id)."""
    stage = RespondStage()
    for _ in range(50):
        assert stage._reply_ports(EmptyPorts()) is None
    store = SqliteStore(tmp_path / "data")
    assert stage._reply_ports(store) is store
    del store
    gc.collect()
    for _ in range(50):
        assert stage._reply_ports(EmptyPorts()) is None
