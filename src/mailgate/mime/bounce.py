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


# -- bounces without a delivery-status part ----------------------------------------------------
# Older MTAs (qmail "failure notice", Gmail's plain-text DSNs, Exchange/Domino "Undeliverable")
# send a human-readable bounce only. It is recognized by its sender (RFC 5321 section 4.5.5
# null-path senders use MAILER-DAEMON/postmaster) and its wording, and the RFC 3463 status code
# or SMTP reply code is read from the text before the returned message.

_DAEMON = re.compile(r"^(?:mailer-daemon|postmaster|mail-daemon|mailerdaemon)@", re.IGNORECASE)
_BOUNCE_WORDS = re.compile(
    r"undeliver|delivery status notification|delivery (?:has )?fail|failure notice"
    r"|returned mail|could not be delivered|delivery failed|non-?delivery|unzustellbar"
    r"|failed permanently|permanent (?:fatal )?error|message not delivered",
    re.IGNORECASE,
)
_ORIGINAL = re.compile(
    r"^[ \t-]*(?:original message|this is a copy of|below this line is a copy|"
    r"original message follows|the original message|message headers follow)",
    re.IGNORECASE | re.MULTILINE,
)
_SMTP_CODE = re.compile(r"\b([45])\d\d[ -]")
_EMAIL = re.compile(r"[\w.+'=-]+@[\w-]+(?:\.[\w-]+)+")
_TRANSIENT = re.compile(r"temporar|delayed|will (?:retry|try again)|not yet been delivered", re.I)
_SCAN_CHARS = 8000


def guess_bounce(
    sender: str | None, subject: str | None, text: str | None
) -> dict[str, Any] | None:
    """A ``bounce`` object for a plain-text bounce from a mailer daemon, or None."""
    if not sender or not text or _DAEMON.match(sender) is None:
        return None
    if _BOUNCE_WORDS.search(subject or "") is None and _BOUNCE_WORDS.search(text[:2000]) is None:
        return None
    head = text[:_SCAN_CHARS]
    cut = _ORIGINAL.search(head)
    if cut is not None:
        head = head[: cut.start()]
    status_m = _STATUS.search(head)
    if status_m is not None:
        status: str | None = status_m.group(0)
    else:
        code = _SMTP_CODE.search(head)
        status = f"{code.group(1)}.0.0" if code else None
    transient = _TRANSIENT.search(head) is not None
    kind = {"2": "success", "4": "transient", "5": "permanent"}.get(
        (status or "")[:1], "transient" if transient else "permanent"
    )
    daemon_domain = sender.rsplit("@", 1)[-1].lower()
    recipient = next(
        (
            m.group(0)
            for m in _EMAIL.finditer(head)
            if not m.group(0).lower().endswith(daemon_domain)
        ),
        None,
    )
    diagnostic = None
    for line in head.splitlines():
        if status is not None and (
            status in line or (status_m is None and _SMTP_CODE.search(line))
        ):
            diagnostic = line.strip()
            break
    entry = {
        "status": status,
        "action": "delayed" if kind == "transient" else "failed",
        "finalRecipient": recipient,
        "originalRecipient": recipient,
        "diagnostic": diagnostic,
        "remoteMta": None,
    }
    return {**entry, "kind": kind, "reportingMta": None, "recipients": [entry], "heuristic": True}
