"""A small cache of values computed once per live object (a config, a ports object, a template).

Keying a dict on ``id(obj)`` alone is wrong: once the object is freed, a new object can get
the same id and be handed the old value (a reloaded config would keep the old loop guard; a
replaced template would skip its safety check). Each entry here holds its object, so the id
cannot be reused while the entry exists, and a hit is confirmed with ``is``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class PerObject(Generic[K, V]):
    """``get(obj, make)`` returns ``make(obj)``, computed once per object; at most `limit` kept."""

    def __init__(self, limit: int = 16) -> None:
        self._limit = limit
        self._entries: dict[int, tuple[K, V]] = {}

    def get(self, obj: K, make: Callable[[K], V]) -> V:
        entry = self._entries.get(id(obj))
        if entry is not None and entry[0] is obj:
            return entry[1]
        value = make(obj)
        if len(self._entries) >= self._limit:
            self._entries.clear()
        self._entries[id(obj)] = (obj, value)
        return value

    def __len__(self) -> int:
        return len(self._entries)
