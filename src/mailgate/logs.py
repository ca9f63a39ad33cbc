"""Structured log lines: one logger per subsystem, message id and trace id first.

Lines are logfmt (``ts=… level=… logger=… msg_id=… trace_id=… event=… key=value``) or JSON,
both journald-friendly on stdout, and both parse without surprises:

* one key per field: a caller's field named like a reserved key (``ts``, ``level``,
  ``logger``, ``event``, …) comes out as ``field_<name>``, never as a second ``event=``;
* values are scalars or compact JSON (a dict is ``{"a":1}``, never Python's ``{'a': 1}``);
* ``ts`` is ISO-8601 UTC with milliseconds in both formats;
* a line about a failure carries ``error="ExcType: message"``; the traceback (``exc=``) is
  kept only on error lines, where something unexpected happened;
* ``msg_id``/``trace_id`` come from the record or, when the caller gave none, from the
  message context set once per message (`log_context`), so every line logged while a message
  is handled names it without each call site passing the ids.

Callers pass facts with ``extra=log_fields(msg_id, trace_id, key=value, …)``. Bodies and
secrets are never logged. `RateLimitedLog` keeps a failure that repeats (a full disk, a
locked database) to one line every few seconds with a ``suppressed=`` count.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

SUBSYSTEMS = ("smtp", "auth", "mime", "pipeline", "store", "delivery", "api", "reply", "app")

RESERVED = ("ts", "level", "logger", "msg_id", "trace_id", "event", "error", "exc")
"""Keys the formatter writes itself; a field of the same name is renamed ``field_<name>``."""

_CONTEXT: contextvars.ContextVar[tuple[str | None, str | None]] = contextvars.ContextVar(
    "mailgate_log_context", default=(None, None)
)


def get_logger(subsystem: str) -> logging.Logger:
    return logging.getLogger(f"mailgate.{subsystem}")


@contextlib.contextmanager
def log_context(msg_id: str | None = None, trace_id: str | None = None) -> Iterator[None]:
    """Every line logged inside (in this task or thread) carries these ids.

    Ids not given keep the enclosing context's: an SMTP session sets its trace id and a
    message stored in it adds its msg_id.
    """
    outer_msg, outer_trace = _CONTEXT.get()
    token = _CONTEXT.set((msg_id or outer_msg, trace_id or outer_trace))
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def set_log_context(msg_id: str | None = None, trace_id: str | None = None) -> None:
    """Set the ids for the rest of the current task (for code that cannot use a ``with``)."""
    _CONTEXT.set((msg_id, trace_id))


def current_log_context() -> tuple[str | None, str | None]:
    return _CONTEXT.get()


def describe_error(exc: BaseException) -> str:
    """``ExcType: message`` (the type alone when the message is empty), one line."""
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted((_jsonable(v) for v in value), key=str)
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, BaseException):
        return describe_error(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def logfmt_value(value: Any) -> str:
    """One logfmt value: bare when safe, else a JSON string; dicts/lists as compact JSON."""
    value = _jsonable(value)
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    else:
        text = str(value)
    if text == "" or any(c in text for c in ' ="\\') or not text.isprintable():
        return json.dumps(text, ensure_ascii=False)
    return text


def iso_ts(created: float) -> str:
    """ISO-8601 UTC with milliseconds: ``2026-12-04T21:13:30.123Z``."""
    whole = int(created)
    millis = int((created - whole) * 1000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(whole))}.{millis:03d}Z"


def record_pairs(record: logging.LogRecord, format_exc: Any) -> list[tuple[str, Any]]:
    """The ordered (key, value) pairs of one line, each key once."""
    ctx_msg, ctx_trace = _CONTEXT.get()
    raw_fields = getattr(record, "fields", None)
    fields: dict[str, Any] = dict(raw_fields) if isinstance(raw_fields, dict) else {}
    msg_id = getattr(record, "msg_id", None) or fields.pop("msg_id", None) or ctx_msg
    trace_id = getattr(record, "trace_id", None) or fields.pop("trace_id", None) or ctx_trace
    pairs: list[tuple[str, Any]] = [
        ("ts", iso_ts(record.created)),
        ("level", record.levelname.lower()),
        ("logger", record.name),
    ]
    if msg_id:
        pairs.append(("msg_id", msg_id))
    if trace_id:
        pairs.append(("trace_id", trace_id))
    pairs.append(("event", record.getMessage()))
    error = fields.pop("error", None)
    exc = record.exc_info[1] if record.exc_info else None
    if error in (None, "") and exc is not None:
        error = describe_error(exc)
    if error not in (None, ""):
        pairs.append(("error", error))
    seen = {k for k, _ in pairs}
    for key, value in fields.items():
        name = str(key)
        while name in seen or name in RESERVED:
            name = f"field_{name}"
        seen.add(name)
        pairs.append((name, value))
    if exc is not None and record.levelno >= logging.ERROR and record.exc_info:
        pairs.append(("exc", format_exc(record.exc_info)))
    return pairs


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        pairs = record_pairs(record, self.formatException)
        return " ".join(f"{k}={logfmt_value(v)}" for k, v in pairs)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        pairs = record_pairs(record, self.formatException)
        out = {k: _jsonable(v) for k, v in pairs}
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


def setup_logging(level: str = "info", fmt: str = "logfmt") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger("mailgate")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    # aiosmtpd logs every peer at INFO; keep its noise out of ours.
    logging.getLogger("mail.log").setLevel(logging.WARNING)


def log_fields(
    msg_id: str | None = None, trace_id: str | None = None, **fields: Any
) -> dict[str, Any]:
    """``extra=`` helper: ``log.info("spooled", extra=log_fields(msg_id, trace_id, size=123))``.

    A ``fields={…}`` dict (an older calling style) is merged into the fields, not logged as
    one value.
    """
    nested = fields.pop("fields", None)
    if isinstance(nested, dict):
        fields = {**nested, **fields}
    elif nested is not None:
        fields["field_fields"] = nested
    return {"msg_id": msg_id, "trace_id": trace_id, "fields": fields}


class RateLimitedLog:
    """Logs a repeating failure at most once per ``interval`` seconds per key.

    Lines in between are counted, not written; the next line written says how many were left
    out (``suppressed=N``). A worker whose store is failing (disk full) thus writes one line
    every few seconds instead of hundreds per second.
    """

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def log(
        self,
        level: int,
        key: str,
        event: str,
        *,
        exc: BaseException | None = None,
        msg_id: str | None = None,
        trace_id: str | None = None,
        **fields: Any,
    ) -> bool:
        """Log now, or count the line for later; returns whether it was written."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            fields["suppressed"] = suppressed
        if exc is not None and "error" not in fields:
            fields["error"] = describe_error(exc)
        exc_info = exc if (exc is not None and level >= logging.ERROR) else None
        self.logger.log(
            level, event, exc_info=exc_info, extra=log_fields(msg_id, trace_id, **fields)
        )
        return True

    def reset(self, key: str) -> int:
        """Forget ``key`` (the failure stopped); returns how many lines were still suppressed."""
        with self._lock:
            self._last.pop(key, None)
            return self._suppressed.pop(key, 0)

    def reset_all(self) -> int:
        """Forget every key; returns how many lines were still suppressed."""
        with self._lock:
            self._last.clear()
            count = sum(self._suppressed.values())
            self._suppressed.clear()
            return count
