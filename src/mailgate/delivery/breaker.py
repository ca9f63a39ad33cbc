"""A circuit breaker per webhook target, so one dead receiver does not slow the others.

Closed: attempts flow. After ``threshold`` consecutive failures (timeouts, connection errors,
5xx/429) it opens: no attempt for ``cooldown`` seconds, the target's rows simply wait (their
retry budget is not spent). Then half-open: one probe attempt; success closes the breaker,
failure opens it again for another cooldown.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class CircuitBreaker:
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"

    def __init__(
        self,
        threshold: int,
        cooldown: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = max(1, threshold)
        self.cooldown = cooldown
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self.probing = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return self.CLOSED
        if self.clock() - self.opened_at >= self.cooldown:
            return self.HALF_OPEN
        return self.OPEN

    def allowance(self, wanted: int) -> int:
        """How many attempts may start now, of ``wanted``."""
        state = self.state
        if state == self.CLOSED:
            return wanted
        if state == self.HALF_OPEN and not self.probing:
            return min(1, wanted)
        return 0

    def started(self) -> None:
        if self.state == self.HALF_OPEN:
            self.probing = True

    def reopens_in(self) -> float:
        """Seconds until an open breaker lets a probe through (0 if not open)."""
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.cooldown - (self.clock() - self.opened_at))

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.probing = False

    def failure(self) -> bool:
        """Record a failure; True if this opened (or re-opened) the breaker."""
        self.failures += 1
        was_probing = self.probing
        self.probing = False
        if was_probing or (self.opened_at is None and self.failures >= self.threshold):
            self.opened_at = self.clock()
            return True
        return False
