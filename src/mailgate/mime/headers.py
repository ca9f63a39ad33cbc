"""Top-level header fields: splitting the raw header block and decoding values.

mailgate reads the top-level header block itself, from bytes, instead of going through
``policy.default``'s header registry: that registry is ~9x slower on small mail, turns raw 8-bit
bytes into lone surrogates, and cannot see obsolete ``Subject :`` fields (RFC 5322 section 4.5).
Only the few headers the envelope needs are decoded further (RFC 2047 encoded words here,
addresses in ``addresses.py``). The MIME structure is still parsed by the stdlib.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from mailgate.mime.charsets import codec_for, decode_8bit_header, iso2022jp_as_cp932, scrub
from mailgate.mime.errors import ErrorLog
from mailgate.mime.limits import Limits

# RFC 5322 section 2.2: a field name is printable ASCII except ':'; obs-syntax (section 4.5.?)
# allows white space before the colon ("Subject :").
_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_FOLD = re.compile(r"\r?\n(?=[ \t])|\r(?=[ \t])")
_STRAY_EOL = re.compile(r"[\r\n]+")

# RFC 2047 section 2: =?charset?encoding?encoded-text?= ; charset may carry an RFC 2231
# language suffix. Tolerate spaces inside Q text (seen from broken mailers) but bound length.
_EWORD = re.compile(rb"=\?([^?\s]{1,64})\?([bBqQ])\?([^?]{0,2000}?)\?=")
_B64_TEXT = re.compile(rb"[A-Za-z0-9+/]*=*")
_Q_HEX = re.compile(rb"=([0-9A-Fa-f]{2})")
_WSP_ONLY = re.compile(rb"[ \t\r\n]*")

RawHeader = tuple[str, bytes]
"""One field as read: (name as written, raw value bytes with folding kept)."""


def split_header_block(raw: bytes, limits: Limits, errors: ErrorLog) -> tuple[list[RawHeader], int]:
    """Read the top-level header fields of ``raw``; return (fields, offset where the body starts).

    Stops at the first empty line (RFC 5322 section 2.1), or at a line that is neither a field
    nor a continuation (the stdlib treats such a line as the start of the body, and so do we).
    A leading mbox ``From `` line is skipped. Past ``limits.max_headers`` fields or
    ``limits.max_header_bytes`` bytes the rest is skipped and logged.
    """
    fields: list[RawHeader] = []
    pos = 0
    end = len(raw)
    if raw.startswith(b"From "):
        nl = raw.find(b"\n")
        pos = end if nl < 0 else nl + 1
    name: str | None = None
    value_parts: list[bytes] = []
    max_bytes = limits.max_header_bytes
    truncated = False
    while pos < end:
        nl = raw.find(b"\n", pos)
        line_end = end if nl < 0 else nl + 1
        line = raw[pos:line_end]
        if line in (b"\r\n", b"\n", b"\r"):
            pos = line_end
            break
        if line[:1] in (b" ", b"\t"):
            if name is not None and not truncated:
                value_parts.append(line)
            pos = line_end
            continue
        m = _FIELD.match(line)
        if m is None:
            # Not a header: the body starts here (MissingHeaderBodySeparatorDefect).
            errors.add("header.missing-separator", "a non-header line ended the header block")
            break
        if name is not None and not truncated:
            fields.append((name, b"".join(value_parts)))
        if pos >= max_bytes or len(fields) >= limits.max_headers:
            if not truncated:
                errors.add(
                    "limit.headers",
                    f"header block over {limits.max_headers} fields or {max_bytes} bytes; "
                    "the rest was skipped",
                )
            truncated = True
            name = None
        else:
            name = m.group(1).decode("ascii")
            value_parts = [line[m.end() :]]
        pos = line_end
    else:
        pos = end
    if name is not None and not truncated:
        fields.append((name, b"".join(value_parts)))
    return fields, pos


def unfold(value: str) -> str:
    """RFC 5322 section 2.2.3 unfolding; also drops stray CR/LF and outer white space."""
    if "\n" in value or "\r" in value:
        value = _STRAY_EOL.sub("", _FOLD.sub("", value))
    return value.strip()


def raw_text(value: bytes) -> str:
    """The unfolded header value as text, 8-bit bytes decoded, encoded words left as they are."""
    return unfold(decode_8bit_header(value))


def _decode_eword_bytes(enc: bytes, text: bytes) -> bytes | None:
    if enc in (b"b", b"B"):
        data = text.strip()
        if _B64_TEXT.fullmatch(data) is None:
            return None
        data = data.rstrip(b"=")
        data += b"=" * (-len(data) % 4)
        try:
            return base64.b64decode(data)
        except (binascii.Error, ValueError):
            try:
                return binascii.a2b_base64(data)
            except (binascii.Error, ValueError):
                return None
    return _Q_HEX.sub(lambda m: bytes([int(m.group(1), 16)]), text.replace(b"_", b" "))


def _fallback_word(data: bytes, codec: str) -> str:
    """An encoded word whose bytes do not fit its charset: Windows ISO-2022-JP, UTF-8, or
    the declared codec with U+FFFD."""
    if codec.startswith("iso2022_jp"):
        windows = iso2022jp_as_cp932(data)
        if windows is not None:
            return windows
    if codec == "utf-8":
        return decode_8bit_header(data)  # mislabelled cp1252/latin-1, as for bodies
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode(codec, "replace")


def decode_words(value: bytes, errors: ErrorLog | None = None) -> str:
    """Decode RFC 2047 encoded words in a raw header value (bytes), unfolded.

    Adjacent encoded words of the same charset are joined as bytes before decoding, so a
    multi-byte character split across two words (common in CJK subjects) survives; white space
    between encoded words is dropped (RFC 2047 section 6.2). Raw 8-bit bytes inside an encoded
    word are decoded with the word's charset; elsewhere UTF-8, then cp1252.
    """
    if b"=?" not in value:
        return raw_text(value)
    out: list[str] = []
    pending_codec: str | None = None
    pending: list[bytes] = []
    pos = 0
    bad = False

    def flush() -> None:
        nonlocal pending, pending_codec, bad
        if pending:
            data = b"".join(pending)
            if pending_codec is None:
                out.append(decode_8bit_header(data))
            else:
                try:
                    out.append(data.decode(pending_codec))
                except (UnicodeDecodeError, LookupError):
                    out.append(_fallback_word(data, pending_codec))
                    bad = bad or not out[-1].isprintable() or "\ufffd" in out[-1]
        pending = []
        pending_codec = None

    for m in _EWORD.finditer(value):
        between = value[pos : m.start()]
        decoded = _decode_eword_bytes(m.group(2), m.group(3))
        if decoded is None or not pending or _WSP_ONLY.fullmatch(between) is None:
            flush()
            out.append(decode_8bit_header(between))
        if decoded is None:
            flush()
            bad = True
            out.append(decode_8bit_header(m.group(0)))
        else:
            label = m.group(1).decode("ascii", "replace")
            codec = codec_for(label)
            if codec is None and label.split("*", 1)[0].lower() not in ("x-unknown", "unknown"):
                bad = True
            if pending and codec != pending_codec:
                flush()
            pending_codec = codec
            pending.append(decoded)
        pos = m.end()
    flush()
    out.append(decode_8bit_header(value[pos:]))
    if bad and errors is not None:
        errors.add("header.encoded-word", "an RFC 2047 encoded word could not be decoded cleanly")
    return scrub(unfold("".join(out)))


class HeaderSet:
    """Case-insensitive view of the top-level fields, in order, with the raw bytes kept."""

    __slots__ = ("_by_name", "fields")

    def __init__(self, fields: list[RawHeader]) -> None:
        self.fields = fields
        self._by_name: dict[str, list[bytes]] = {}
        for name, value in fields:
            self._by_name.setdefault(name.lower(), []).append(value)

    def first(self, name: str) -> bytes | None:
        values = self._by_name.get(name)
        return values[0] if values else None

    def all(self, name: str) -> list[bytes]:
        return self._by_name.get(name, [])

    def __contains__(self, name: str) -> bool:
        return name in self._by_name


_ALWAYS = ("Message-ID", "In-Reply-To", "References")


def headers_object(fields: list[RawHeader], errors: ErrorLog) -> dict[str, Any]:
    """The envelope's ``headers``: every field by its first-seen name, values decoded.

    ``Message-ID``, ``In-Reply-To`` and ``References`` are always present (null when absent).
    A field seen once is a string; a repeated field (Received) is a list in message order,
    except the three id fields, which stay one string (the first) for threading consumers.
    """
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for canonical in _ALWAYS:
        out[canonical] = None
        spelled[canonical.lower()] = canonical
    for name, raw in fields:
        key = name.lower()
        value = decode_words(raw, errors)
        first = spelled.get(key)
        if first is None:
            spelled[key] = name
            out[name] = value
            continue
        current = out[first]
        if current is None:
            out[first] = value
        elif first in _ALWAYS:
            # RFC 5322 3.6 allows one of each; consumers get a string. Keep the first.
            errors.add("header.duplicate", f"repeated {first} header; the first one is used")
        elif isinstance(current, list):
            current.append(value)
        else:
            out[first] = [current, value]
    return out
