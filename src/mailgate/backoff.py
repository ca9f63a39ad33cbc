"""Back-off for worker loops whose store (or anything else) keeps failing.

A loop that retries a failing store at once spins: it burns a core and, before this module,
wrote about 200 traceback lines a second while the disk was full. `LoopBackoff` gives such a
loop a capped exponential wait (0.2 s doubling to 30 s, back to nothing on the first success)
and a rate-limited log: one line every ``log_interval`` seconds with the error and how many
lines were left out, and one ``recovered`` line when the loop works again.
"""

from __future__ import annotations

import logging

from mailgate.logs import RateLimitedLog


class Backoff:
    """Capped exponential delays: ``initial``, ``initial*factor``, … up to ``maximum``."""

    def __init__(self, initial: float = 0.2, maximum: float = 30.0, factor: float = 2.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.failures = 0

    def next_delay(self) -> float:
        """Count one more failure; returns how long to wait before trying again."""
        delay = min(self.maximum, self.initial * self.factor ** min(self.failures, 64))
        self.failures += 1
        return delay

    def reset(self) -> int:
        """A success: the next failure starts from ``initial`` again. Returns the failures."""
        failures, self.failures = self.failures, 0
        return failures


class LoopBackoff:
    """What a worker loop does when a round fails: wait longer each time, log sparingly.

    ``expected`` exceptions (the store is unavailable: disk full, locked, I/O error) are
    logged as warnings with ``error=`` only; anything else is unexpected and logged at error
    level with its traceback, under the same rate limit.
    """

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        expected: tuple[type[BaseException], ...] = (),
        initial: float = 0.2,
        maximum: float = 30.0,
        log_interval: float = 10.0,
    ) -> None:
        self.logger = logger
        self.what = what
        self.expected = expected
        self.backoff = Backoff(initial, maximum)
        self.limited = RateLimitedLog(logger, log_interval)

    @property
    def failures(self) -> int:
        return self.backoff.failures

    def failed(self, exc: BaseException) -> float:
        """Record a failed round; returns the delay to wait before the next one."""
        delay = self.backoff.next_delay()
        expected = isinstance(exc, self.expected)
        self.limited.log(
            logging.WARNING if expected else logging.ERROR,
            f"{self.what}:{type(exc).__name__}",
            f"{self.what} failed; backing off",
            exc=exc,
            failures=self.backoff.failures,
            retry_in_s=round(delay, 3),
        )
        return delay

    def succeeded(self) -> None:
        """A round worked: reset the delay; say so if it had been failing.

        The log limits are kept: a loop that flaps (a shared commit failing now and then)
        still writes one failure line and one ``recovered`` line per ``log_interval``.
        """
        failures = self.backoff.reset()
        if failures:
            self.limited.log(logging.INFO, "recovered", f"{self.what} recovered", failures=failures)
