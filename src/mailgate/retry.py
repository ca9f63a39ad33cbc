"""The webhook retry schedule: parsing ``"0s, 5s, 5m*2, 1h"`` and picking the next attempt time.

Each entry is the delay before one attempt, counted from the previous attempt; ``D*N`` repeats a
delay N times (Haraka's ``temp_fail_intervals`` notation). The default follows the Standard
Webhooks reference schedule (immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h):
ten attempts over about 3 days, longer than hosted inbound-mail services keep retrying.
After the last entry the delivery goes to the dead-letter queue.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from mailgate.config import parse_duration

# Never wait longer than a day for one Retry-After, whatever the receiver asks.
MAX_RETRY_AFTER = 86400.0


@dataclass(frozen=True)
class RetrySchedule:
    """Delays (seconds) before attempt 1, 2, … ; ``len(delays)`` is the number of attempts."""

    delays: tuple[float, ...]
    jitter: float = 0.1

    @classmethod
    def parse(cls, text: str, *, jitter: float = 0.1) -> RetrySchedule:
        """``"0s, 5s, 5m*2, 1h"`` -> RetrySchedule; ``ValueError`` names the bad entry."""
        delays: list[float] = []
        for raw in text.split(","):
            entry = raw.strip()
            if not entry:
                continue
            count = 1
            if "*" in entry:
                value, _, times = entry.partition("*")
                entry = value.strip()
                if not times.strip().isdigit() or int(times) < 1:
                    raise ValueError(f"retry schedule entry {raw.strip()!r}: expected DELAY*COUNT")
                count = int(times)
            try:
                delay = parse_duration(entry)
            except ValueError:
                raise ValueError(
                    f"retry schedule entry {raw.strip()!r}: expected a duration like 5s, 5m, 2h"
                ) from None
            delays.extend([delay] * count)
        if not delays:
            raise ValueError("retry schedule: expected at least one delay")
        if not 0 <= jitter < 1:
            raise ValueError("jitter: expected a fraction between 0 and 1")
        return cls(tuple(delays), jitter)

    @property
    def attempts(self) -> int:
        return len(self.delays)

    @property
    def span(self) -> float:
        """Seconds from the first to the last attempt (without jitter)."""
        return sum(self.delays[1:])

    def delay_after(self, attempts_made: int, rng: random.Random | None = None) -> float | None:
        """Delay before the next attempt once ``attempts_made`` failed; None when spent.

        Jitter spreads retries of many events that failed together (a receiver outage) by
        ±``jitter`` of the delay, so they do not hit the receiver again in one burst.
        """
        if attempts_made >= len(self.delays):
            return None
        base = self.delays[attempts_made]
        if base <= 0 or self.jitter <= 0:
            return base
        r = (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, base * (1 + r))


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (RFC 9110 §10.2.3: delay-seconds or an
    HTTP-date); None when absent or unreadable. Capped at ``MAX_RETRY_AFTER``."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return min(max(0.0, when.timestamp() - now), MAX_RETRY_AFTER)
