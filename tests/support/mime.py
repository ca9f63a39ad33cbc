"""Helpers for MIME parser tests: fixtures, the envelope JSON Schema validator, JSON safety."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures" / "mime"
SCHEMA_PATH = REPO / "src" / "mailgate" / "schemas" / "envelope.schema.json"


@lru_cache(maxsize=1)
def envelope_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def assert_valid_envelope(env: dict[str, Any]) -> None:
    """Schema-valid and serializable as UTF-8 JSON (no lone surrogates anywhere)."""
    errors = sorted(envelope_validator().iter_errors(env), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message[:200]}" for e in errors[:5]]
    json.dumps(env, ensure_ascii=False).encode("utf-8")


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def expected(name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / name).read_text(encoding="utf-8")))


def summary(env: dict[str, Any]) -> dict[str, Any]:
    """The fields the fixture ``<case>.json`` files pin down (ids and urls are left out)."""
    keys = ("from", "to", "cc", "bcc", "replyTo", "subject", "date", "messageId", "inReplyTo",
            "references", "text", "replyText", "html", "bounce", "forwarded")  # fmt: skip
    out = {k: env.get(k) for k in keys}
    att_keys = ("filename", "contentType", "detectedType", "size", "sha256", "disposition")
    out["attachments"] = [
        {**{k: a[k] for k in att_keys}, "contentId": a["contentId"]} for a in env["attachments"]
    ]
    out["parseErrors"] = sorted({e["code"] for e in env["parseErrors"]})
    return out
