"""Structured MIME header values: ``Content-Type``/``Content-Disposition`` and their parameters.

Parsed from the raw bytes the stdlib keeps (surrogate-escaped), so raw 8-bit UTF-8 filenames
are read as text instead of U+FFFD. Handles RFC 2231 (``filename*0*=utf-8''...`` continuations
with charset and language) and the common non-standard RFC 2047 encoded word inside a quoted
parameter (``name="=?utf-8?B?...?="``), which Outlook and many webmailers send.
"""

from __future__ import annotations

import re
from email.message import Message
from urllib.parse import unquote_to_bytes

from mailgate.mime.charsets import codec_for, decode_8bit_header
from mailgate.mime.headers import decode_words, unfold

_PARAM = re.compile(
    r"""\s*;?\s*(?P<name>[^\s=;"]+)\s*=\s*(?:"(?P<q>(?:[^"\\]|\\.)*)"?|(?P<t>[^;]*))""",
    re.DOTALL,
)
_SECTION = re.compile(r"^(?P<base>[^*]+)\*(?P<n>\d+)?(?P<ext>\*)?$")
_BACKSLASH = re.compile(r"\\(.)", re.DOTALL)
_MAX_PARAMS = 64


def header_text(part: Message, name: str) -> str | None:
    """The first ``name`` field of a part, unfolded, with raw 8-bit bytes decoded as text."""
    lname = name.lower()
    for key, value in part.raw_items():
        if key.lower() == lname:
            if not isinstance(value, str):
                value = str(value)
            if not value.isascii():
                value = decode_8bit_header(value.encode("utf-8", "surrogateescape"))
            return unfold(value)
    return None


def _decode_2231(value: str) -> str:
    """charset'language'percent-encoded (RFC 2231 section 4)."""
    parts = value.split("'", 2)
    if len(parts) != 3:
        data = unquote_to_bytes(value)
        return decode_8bit_header(data)
    charset, _lang, encoded = parts
    data = unquote_to_bytes(encoded)
    codec = codec_for(charset)
    if codec is not None:
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            pass
    return decode_8bit_header(data)


def parse_structured(text: str | None) -> tuple[str, dict[str, str]]:
    """``value; a=b; c*=...`` to (lower-cased value, {lower-cased name: decoded text})."""
    if not text:
        return "", {}
    head, sep, rest = text.partition(";")
    value = head.strip().lower()
    params: dict[str, str] = {}
    if not sep:
        return value, params
    sections: dict[str, list[tuple[int, bool, str]]] = {}
    for count, m in enumerate(_PARAM.finditer(rest)):
        if count >= _MAX_PARAMS:
            break
        name = m.group("name").lower()
        quoted = m.group("q")
        raw = _BACKSLASH.sub(r"\1", quoted) if quoted is not None else (m.group("t") or "").strip()
        sec = _SECTION.match(name)
        if sec is not None:
            n = int(sec.group("n")) if sec.group("n") is not None else 0
            # "name*=" (no section number) is extended; "name*0*=" extended; "name*0=" plain.
            extended = bool(sec.group("ext")) or sec.group("n") is None
            sections.setdefault(sec.group("base"), []).append((n, extended, raw))
            continue
        if name in params:
            continue
        if "=?" in raw:
            raw = decode_words(raw.encode("utf-8"))
        params[name] = raw
    for base, pieces in sections.items():
        pieces.sort(key=lambda p: p[0])
        # RFC 2231 section 4.1: only the first section carries charset'lang'; later
        # extended sections are percent-encoded in that charset. Join bytes, decode once.
        first_ext = pieces[0][1]
        if first_ext:
            joined = "".join(p[2] for p in pieces)
            decoded = _decode_2231(joined)
        else:
            decoded = "".join(p[2] for p in pieces)
            if "=?" in decoded:
                decoded = decode_words(decoded.encode("utf-8"))
        # The RFC 2231 form wins over a plain parameter of the same name (it is the precise one).
        params[base] = decoded
    return value, params
