"""Verdicts and the one error type shared by the scanner clients."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from mailgate import metrics

ErrorKind = Literal["unavailable", "timeout", "protocol", "too-large"]


class ScanError(Exception):
    """The engine gave no verdict. ``kind`` says why; ``too-large`` is permanent (a retry of
    the same message gets the same answer), the others are outages worth retrying."""

    def __init__(self, engine: str, kind: ErrorKind, detail: str) -> None:
        super().__init__(f"{engine} {kind}: {detail}")
        self.engine = engine
        self.kind = kind
        self.detail = detail

    @property
    def permanent(self) -> bool:
        return self.kind == "too-large"


@dataclass(frozen=True)
class SpamSymbol:
    name: str
    score: float
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "score": self.score, "description": self.description}


@dataclass(frozen=True)
class SpamVerdict:
    """rspamd's answer: the score, the score at which it would reject, its action, the symbols."""

    score: float
    required: float
    action: str
    symbols: tuple[SpamSymbol, ...] = ()
    seconds: float = 0.0


@dataclass(frozen=True)
class VirusVerdict:
    """clamd's answer: clean, or the name of the signature that matched."""

    signature: str | None = None
    seconds: float = 0.0
    parts: list[str] = field(default_factory=list)
    """Names of the attachments the signature matched (when the stage could tell)."""

    @property
    def clean(self) -> bool:
        return self.signature is None


class Timer:
    """Observes one engine call into ``mailgate_scan_seconds`` and ``mailgate_scan_total``."""

    def __init__(self, engine: str) -> None:
        self.engine = engine
        self.started = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def done(self, outcome: str) -> float:
        elapsed = self.elapsed
        _child(metrics.SCAN_SECONDS, self.engine).observe(elapsed)
        _child(metrics.SCAN_TOTAL, self.engine, outcome).inc()
        return elapsed


@functools.lru_cache(maxsize=64)
def _child(metric: Any, *labels: str) -> Any:
    """The labelled child of a metric, looked up once (``labels()`` locks and builds a key on
    every call). Keyed by the metric object, so a replaced metric gets its own children."""
    return metric.labels(*labels)
