"""Structured single-value headers: Date (RFC 5322 section 3.3) and message ids (section 3.6.4).

``date`` is normalized to RFC 3339 UTC (``2026-04-23T10:31:58Z``) or null. Message ids keep their
angle brackets as written on the wire; an id written without them is bracketed so that
``messageId``/``inReplyTo``/``references`` always compare equal across messages (threading).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from email.utils import parsedate_tz

_MSGID = re.compile(r"<([^<>\s]*)>")
_WORD = re.compile(r"[^\s<>,;()]+")
_COMMENT = re.compile(r"\([^()]*\)")


def parse_date(value: str) -> str | None:
    """RFC 5322 date-time (also obsolete forms) to RFC 3339 UTC; None if unreadable."""
    if not value:
        return None
    try:
        parts = parsedate_tz(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parts is None:
        return None
    year, month, day, hour, minute, second = parts[:6]
    offset = parts[9] or 0
    if not 1 <= year <= 9999 or not (1 <= month <= 12):
        return None
    try:
        # RFC 5322 section 3.3: second 60 is a leap second; clamp rather than reject.
        naive = datetime(year, month, day, hour, minute, min(second, 59))
        when = naive - timedelta(seconds=offset)
    except (ValueError, OverflowError):
        return None
    if not 1 <= when.year <= 9999:
        return None
    # Formatted by hand: strftime does not zero-pad years below 1000 on glibc.
    return (
        f"{when.year:04d}-{when.month:02d}-{when.day:02d}"
        f"T{when.hour:02d}:{when.minute:02d}:{when.second:02d}Z"
    )


def msg_ids(value: str, limit: int = 500) -> list[str]:
    """Every message id in a header value, bracketed; bare ids are bracketed too."""
    if not value:
        return []
    found = [f"<{m}>" for m in _MSGID.findall(value) if m]
    if found:
        return found[:limit]
    # No brackets: take white-space separated words that look like ids (contain '@' or
    # at least are not empty), ignoring comments.
    words = _WORD.findall(_COMMENT.sub(" ", value))
    with_at = [w for w in words if "@" in w]
    return [f"<{w}>" for w in (with_at or words[:1])][:limit]


def first_msg_id(value: str | None) -> str | None:
    """The first message id of a header value (Message-ID, In-Reply-To), or None."""
    if not value:
        return None
    ids = msg_ids(value, limit=1)
    return ids[0] if ids else None
