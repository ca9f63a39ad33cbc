"""The envelope: the one JSON document every consumer sees, and its ids.

Field names follow the MailParse seed (camelCase) so consumers can switch unchanged.
The envelope is plain data (a ``TypedDict``), never an ORM object; its JSON Schema lives
in ``mailgate/schemas/envelope.schema.json`` and tests validate real output against it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypedDict

from ulid import ULID

LOOP_HEADER = "X-Mailgate-Loop"
"""Put on every message mailgate sends (auto-replies); seeing it inbound means a loop."""


def new_id(prefix: str) -> str:
    """A stable, sortable id such as ``msg_01JBX…`` (ULID, time-ordered)."""
    return f"{prefix}_{ULID()}"


def utc_now_iso() -> str:
    """Now, as RFC 3339 UTC with a ``Z`` suffix and second precision."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Address(TypedDict):
    email: str
    name: str


class Attachment(TypedDict, total=False):
    id: str
    filename: str
    contentType: str
    detectedType: str | None
    size: int
    sha256: str
    disposition: str
    contentId: str | None
    url: str | None


class SmtpFacts(TypedDict, total=False):
    mailFrom: str
    rcptTo: list[str]
    clientIp: str
    helo: str
    tls: bool


AuthResultName = Literal[
    "pass", "fail", "softfail", "neutral", "none", "temperror", "permerror", "policy"
]


@dataclass(frozen=True)
class AuthResult:
    """One authentication verdict with its reason; never a bare bool (dkimpy's verify is)."""

    result: str
    domain: str | None = None
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.result == "pass"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"passed": self.passed, "result": self.result, "domain": self.domain}
        if self.reason:
            out["reason"] = self.reason
        out.update(self.extra)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AuthResult:
        data = dict(data)
        data.pop("passed", None)
        result = str(data.pop("result", "none"))
        domain = data.pop("domain", None)
        reason = str(data.pop("reason", ""))
        return cls(result=result, domain=domain, reason=reason, extra=data)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# The envelope is a plain JSON-ready dict keyed exactly as DESIGN.md lists ("from" is a Python
# keyword, so a TypedDict cannot name it); ``schemas/envelope.schema.json`` is its contract and
# the tests validate every produced envelope against it.
Envelope = dict[str, Any]
