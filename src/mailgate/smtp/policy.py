"""Who may send how much: per-IP limits of the SMTP listener.

Which recipients are ours (domains, mailboxes, tenants) is ``mailgate.recipients``, shared with
the pipeline and the auto-reply area; re-exported here for the listener.
"""

from __future__ import annotations

import time
from collections import deque

from mailgate.recipients import (
    ALWAYS_ACCEPTED,
    Accepted,
    RecipientPolicy,
    Refused,
    split_address,
)

__all__ = [
    "ALWAYS_ACCEPTED",
    "Accepted",
    "IpRateLimiter",
    "RecipientPolicy",
    "Refused",
    "split_address",
]


class IpRateLimiter:
    """Sliding one-minute window of messages per client IP (bounded memory)."""

    def __init__(self, per_minute: int, max_ips: int = 100_000) -> None:
        self.per_minute = per_minute
        self.max_ips = max_ips
        self._hits: dict[str, deque[float]] = {}

    def allow(self, ip: str, now: float | None = None) -> bool:
        if self.per_minute <= 0:
            return True
        now = time.monotonic() if now is None else now
        q = self._hits.get(ip)
        if q is None:
            if len(self._hits) >= self.max_ips:
                self._evict(now)
            q = self._hits[ip] = deque()
        while q and now - q[0] > 60.0:
            q.popleft()
        if len(q) >= self.per_minute:
            return False
        q.append(now)
        return True

    def _evict(self, now: float) -> None:
        stale = [ip for ip, q in self._hits.items() if not q or now - q[-1] > 60.0]
        for ip in stale:
            del self._hits[ip]
        if len(self._hits) >= self.max_ips:
            self._hits.clear()
