"""Invitations: the first ``text/calendar`` part (or ``.ics`` file) summarised for the envelope.

``calendar = {method, uid, summary, start, end, organizer, attendees, location, sequence}``.
The method (RFC 5546, iTIP) is what matters most to support: a ``REQUEST`` is an invitation a
person sent, but ``REPLY`` (accepted/declined), ``CANCEL`` and ``COUNTER`` are a calendar
client's answers, and the intent stage keeps the auto-responder away from them.

Why the ``icalendar`` library: iCalendar is a line-folded, escaped, parameterised format with
time zones defined inside the file (VTIMEZONE); hand-parsing it is how invitations get the
wrong hour. icalendar is the maintained parser (Plone's, used by Home Assistant and
CalDAV servers), pure Python, and it only builds data (no code runs on load).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from email.message import Message
from typing import Any

from mailgate.mime.errors import ErrorLog
from mailgate.mime.params import header_text, parse_structured
from mailgate.mime.transfer import children

CALENDAR_TYPES = frozenset({"text/calendar", "application/ics", "text/x-vcalendar"})
MAX_BYTES = 1024 * 1024
"""Larger calendar parts are not parsed (a real invitation is a few KB)."""
MAX_ATTENDEES = 200
MAX_PARTS = 500


def _filename(part: Message) -> str:
    """The part's file name through our tolerant parameter parser (the stdlib's
    ``get_filename`` raises on hostile RFC 2231 values, e.g. an encoded NUL)."""
    _, dparams = parse_structured(header_text(part, "Content-Disposition"))
    _, params = parse_structured(header_text(part, "Content-Type"))
    return dparams.get("filename") or params.get("name") or ""


def _is_calendar(part: Message) -> bool:
    ctype = part.get_content_type().lower()
    name = _filename(part).lower()
    return ctype in CALENDAR_TYPES or name.endswith((".ics", ".ical", ".ifb", ".vcs"))


def _when(value: Any) -> str | None:
    """RFC 3339: UTC for zoned times, as written for floating times, the day for all-day."""
    dt = getattr(value, "dt", value)
    if isinstance(dt, datetime):
        if dt.tzinfo is not None:
            return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return dt.isoformat()
    if isinstance(dt, date):
        return dt.isoformat()
    return None


def _person(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    text = str(value)
    email = text[7:] if text.lower().startswith("mailto:") else text
    params = getattr(value, "params", {}) or {}
    out: dict[str, Any] = {"email": email.strip().lower(), "name": str(params.get("CN") or "")}
    for key in ("PARTSTAT", "ROLE"):
        if params.get(key):
            out[key.lower()] = str(params[key]).upper()
    return out


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def summarize(data: bytes) -> dict[str, Any]:
    """The envelope's ``calendar`` object from iCalendar bytes; raises ValueError if unreadable."""
    from icalendar import Calendar  # imported on first use: most mail has no invitation

    cal = Calendar.from_ical(data.decode("utf-8", "replace"))
    events = [c for c in cal.walk() if c.name in ("VEVENT", "VTODO")]
    event = events[0] if events else cal
    attendees = event.get("ATTENDEE") or []
    if not isinstance(attendees, list):
        attendees = [attendees]
    sequence = event.get("SEQUENCE")
    return {
        "method": str(cal.get("METHOD") or "").upper() or None,
        "uid": _text(event.get("UID")),
        "summary": _text(event.get("SUMMARY")),
        "start": _when(event.get("DTSTART")),
        "end": _when(event.get("DTEND")),
        "organizer": _person(event.get("ORGANIZER")),
        "attendees": [p for p in map(_person, attendees[:MAX_ATTENDEES]) if p],
        "location": _text(event.get("LOCATION")),
        "sequence": int(sequence) if sequence is not None else 0,
    }


def find_calendar(msg: Message, errors: ErrorLog) -> dict[str, Any] | None:
    """The first readable calendar part of ``msg`` (forwarded messages are not opened)."""
    stack = [msg]
    seen = 0
    while stack and seen < MAX_PARTS:
        part = stack.pop(0)
        seen += 1
        sub = children(part)
        if sub is not None:
            stack[:0] = list(sub)
            continue
        if not _is_calendar(part):
            continue
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes) or not data.strip():
            continue
        if len(data) > MAX_BYTES:
            errors.add("calendar.size", f"calendar part over {MAX_BYTES} bytes; not read")
            continue
        try:
            return summarize(data)
        except Exception as exc:  # icalendar raises several types on hostile input
            errors.add("calendar.unreadable", f"calendar part unreadable ({type(exc).__name__})")
    return None
