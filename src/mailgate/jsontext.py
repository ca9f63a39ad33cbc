"""JSON as mailgate stores, sends and serves it: compact, with UTF-8 text kept as it is.

Why orjson: encoding a 100 KB envelope took 564 µs with the stdlib and 80 µs with orjson (a
fifth of the worker's CPU per 100 KB message went to ``json``); decoding 345 → 69 µs. For
what envelopes hold (str, int, float, bool, None, lists, dicts) the output is the stdlib's
``json.dumps(ensure_ascii=False, separators=(",", ":"))``, byte for byte, except for floats
that the two spell differently (``1e16`` / ``1e+16``, the same number) and NaN (``null`` here:
JSON has no NaN). Values orjson refuses fall back to the stdlib, whose output stays the
reference: a lone surrogate (bytes a broken charset left behind), an integer beyond 64 bits.
``tests/test_jsontext.py`` compares the two on generated envelopes.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_OPTIONS = (
    orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
)
"""Keys that are not str are written as the stdlib writes them; datetimes and dataclasses go
to ``default=str`` as with the stdlib instead of orjson's own forms."""


def dumps(value: Any) -> str:
    """Compact JSON text; non-JSON values as ``str(value)`` (what the store has always done)."""
    try:
        return orjson.dumps(value, default=str, option=_OPTIONS).decode("utf-8")
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def dumps_utf8(value: Any) -> bytes:
    """Compact JSON as UTF-8 bytes that are always valid UTF-8: a lone surrogate (which UTF-8
    cannot carry) makes the whole document ``\\u``-escaped ASCII instead."""
    try:
        return orjson.dumps(value, default=str, option=_OPTIONS)
    except (orjson.JSONEncodeError, TypeError):
        pass
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str).encode()
    except UnicodeEncodeError:
        return json.dumps(value, ensure_ascii=True, separators=(",", ":"), default=str).encode()


def loads(text: str | bytes) -> Any:
    """Parse JSON text; what orjson refuses (a lone surrogate in a str) goes to the stdlib, so
    errors are ``json.JSONDecodeError`` (orjson's is a subclass) as before. An integer beyond
    64 bits is read as a float (orjson's rule); what mailgate stores holds none."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
