"""Delivery status notifications (RFC 3464) to the envelope's ``bounce`` object.

A ``multipart/report; report-type=delivery-status`` message carries a ``message/delivery-status``
part: one block of per-message fields, then one block per recipient (Final-Recipient,
Original-Recipient, Action, Status, Diagnostic-Code, Remote-MTA). ``bounce`` gives the first
failed (else first) recipient's fields at the top level and every recipient in ``recipients``.
"""

from __future__ import annotations

import re
from typing import Any

from mailgate.mime.headers import unfold

_FIELD = re.compile(r"^([A-Za-z0-9-]+)[ \t]*:(.*(?:\n[ \t].*)*)", re.MULTILINE)
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_MAX_RECIPIENTS = 100


def _typed(value: str) -> str:
    """``rfc822; user@example.com`` -> ``user@example.com`` (RFC 3464 section 2.3.1 type prefix)."""
    addr_type, sep, rest = value.partition(";")
    if sep and addr_type.strip() and " " not in addr_type.strip():
        value = rest
    return value.strip().strip("<>").strip()


def _blocks_from_text(text: str) -> list[dict[str, str]]:
    blocks: list[dict[str, str]] = []
    for chunk in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n")):
        fields: dict[str, str] = {}
        for m in _FIELD.finditer(chunk):
            fields.setdefault(m.group(1).lower(), unfold(m.group(2)))
        if fields:
            blocks.append(fields)
    return blocks


def _recipient(fields: dict[str, str]) -> dict[str, Any]:
    status_raw = fields.get("status", "")
    m = _STATUS.search(status_raw)
    action = fields.get("action", "").strip().lower() or None
    return {
        "status": m.group(0) if m else (status_raw.strip() or None),
        "action": action,
        "finalRecipient": _typed(fields["final-recipient"])
        if "final-recipient" in fields
        else None,
        "originalRecipient": (
            _typed(fields["original-recipient"]) if "original-recipient" in fields else None
        ),
        "diagnostic": fields.get("diagnostic-code") or None,
        "remoteMta": _typed(fields["remote-mta"]) if "remote-mta" in fields else None,
    }


def parse_delivery_status(text: str) -> dict[str, Any] | None:
    """The ``bounce`` object for a message/delivery-status body, or None if it has no recipient."""
    blocks = _blocks_from_text(text)
    if not blocks:
        return None
    per_message = blocks[0] if "final-recipient" not in blocks[0] else {}
    recipients = [
        _recipient(b) for b in blocks if "final-recipient" in b or "original-recipient" in b
    ][:_MAX_RECIPIENTS]
    if not recipients:
        return None
    main = next((r for r in recipients if r["action"] == "failed"), recipients[0])
    status = main["status"]
    kind = None
    if isinstance(status, str) and status[:1] in "245":
        kind = {"2": "success", "4": "transient", "5": "permanent"}[status[0]]
    return {
        **main,
        "originalRecipient": main["originalRecipient"] or main["finalRecipient"],
        "kind": kind,
        "reportingMta": _typed(per_message["reporting-mta"])
        if "reporting-mta" in per_message
        else None,
        "recipients": recipients,
    }
