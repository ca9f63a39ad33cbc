"""Read helpers over an envelope: headers by any case, addresses, times.

The envelope is plain JSON from the MIME parser; fields may be missing or null on broken mail,
so every accessor here tolerates absence and wrong types rather than raising. `EnvView` caches
what several stages and many rules need (lowercased headers, address lists) for one run.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from mailgate.envelope import Envelope


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [str(v) for v in value if v is not None]
    return [str(value)]


def emails(value: Any) -> list[str]:
    """Lower-cased addresses of an address field (a dict, a list of dicts, or strings)."""
    out: list[str] = []
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, dict):
            email = item.get("email") or item.get("address")
            if isinstance(email, str) and email:
                out.append(email.strip().lower())
        elif isinstance(item, str) and item:
            out.append(item.strip().strip("<>").lower())
    return out


def names(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    return [str(i.get("name")) for i in items if isinstance(i, dict) and i.get("name")]


def parse_time(value: Any) -> float | None:
    """RFC 3339 (``2026-04-23T10:32:11Z``) to epoch seconds; None when absent or bad."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def domain_of(email: str) -> str:
    return email.rpartition("@")[2].lower()


class EnvView:
    """Cached, forgiving accessors over one envelope."""

    __slots__ = ("_headers", "env")

    def __init__(self, env: Envelope) -> None:
        self.env = env
        self._headers: dict[str, list[str]] | None = None

    @property
    def headers(self) -> dict[str, list[str]]:
        """Header values by lower-cased name (repeated fields keep every value, in order)."""
        if self._headers is None:
            out: dict[str, list[str]] = {}
            raw = self.env.get("headers")
            if isinstance(raw, dict):
                for name, value in raw.items():
                    out.setdefault(str(name).lower(), []).extend(_strings(value))
            elif isinstance(raw, list):  # [[name, value], ...] or [{"name":…, "value":…}]
                for item in raw:
                    if isinstance(item, dict):
                        name, value = item.get("name"), item.get("value")
                    elif isinstance(item, list | tuple) and len(item) == 2:
                        name, value = item
                    else:
                        continue
                    if name:
                        out.setdefault(str(name).lower(), []).extend(_strings(value))
            self._headers = out
        return self._headers

    def header(self, name: str) -> list[str]:
        return self.headers.get(name.lower(), [])

    def first_header(self, name: str) -> str | None:
        values = self.header(name)
        return values[0] if values else None

    def text(self, key: str) -> str:
        value = self.env.get(key)
        return value if isinstance(value, str) else ""

    @property
    def sender(self) -> str:
        """The From address (lower-cased), else the SMTP MAIL FROM, else empty."""
        found = emails(self.env.get("from"))
        if found:
            return found[0]
        return self.mail_from

    @property
    def mail_from(self) -> str:
        smtp = self.env.get("envelope")
        if isinstance(smtp, dict):
            value = smtp.get("mailFrom")
            if isinstance(value, str):
                return value.strip().strip("<>").lower()
        return ""

    @property
    def rcpt_to(self) -> list[str]:
        smtp = self.env.get("envelope")
        if isinstance(smtp, dict):
            return emails(smtp.get("rcptTo"))
        return []

    @property
    def tenant(self) -> str:
        value = self.env.get("tenant")
        return value if isinstance(value, str) and value else "default"

    @property
    def attachments(self) -> list[dict[str, Any]]:
        value = self.env.get("attachments")
        if not isinstance(value, list):
            return []
        return [a for a in value if isinstance(a, dict)]

    def section(self, key: str) -> dict[str, Any]:
        value = self.env.get(key)
        return value if isinstance(value, dict) else {}
