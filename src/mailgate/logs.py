"""Structured log lines: one logger per subsystem, message id and trace id first.

Lines are logfmt (``ts=… level=… logger=… msg_id=… trace_id=… event=… key=value``) or JSON,
both journald-friendly on stdout. Callers pass facts as ``extra={"msg_id": …, "trace_id": …,
"fields": {…}}``; bodies and secrets are never logged.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

SUBSYSTEMS = ("smtp", "auth", "mime", "pipeline", "store", "delivery", "api", "reply", "app")


def get_logger(subsystem: str) -> logging.Logger:
    return logging.getLogger(f"mailgate.{subsystem}")


def _quote(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' ="\n\t'):
        return json.dumps(text, ensure_ascii=False)
    return text


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [
            f"ts={time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(record.created))}"
            f".{int(record.msecs):03d}Z",
            f"level={record.levelname.lower()}",
            f"logger={record.name}",
        ]
        for key in ("msg_id", "trace_id"):
            value = getattr(record, key, None)
            if value:
                parts.append(f"{key}={_quote(value)}")
        parts.append(f"event={_quote(record.getMessage())}")
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            parts.extend(f"{k}={_quote(v)}" for k, v in fields.items())
        if record.exc_info:
            parts.append(f"exc={_quote(self.formatException(record.exc_info))}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        for key in ("msg_id", "trace_id"):
            value = getattr(record, key, None)
            if value:
                out[key] = value
        out["event"] = record.getMessage()
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update({k: v for k, v in fields.items() if k not in out})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


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
    """``extra=`` helper: ``log.info("spooled", extra=log_fields(msg_id, trace_id, size=123))``."""
    return {"msg_id": msg_id, "trace_id": trace_id, "fields": fields}
