"""Content-Transfer-Encoding decoding (RFC 2045 section 6) that tolerates real-world damage.

Base64 with missing padding, junk lines, 8-bit garbage or several padded blocks glued together,
quoted-printable with bad escapes, misspelled encoding names: each decodes to the bytes a
careful reader would recover, and the caller is told when a repair was needed.
"""

from __future__ import annotations

import binascii
import re
import zlib
from email.message import Message

_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/=]+")
_B64_BLOCKS = re.compile(rb"[A-Za-z0-9+/]+")
_MAX_INFLATE = 50 * 1024 * 1024
UUENCODE_FAILED = "uuencoded body could not be decoded"
GZIP64_TOO_BIG = "x-gzip64 body inflates past the limit; kept compressed"
UNDECODABLE = frozenset({UUENCODE_FAILED, GZIP64_TOO_BIG})
"""Problems after which the body's content is unknown (not just repaired): unscannable."""


def _b64_lenient(data: bytes) -> bytes:
    """Decode what can be decoded: per padded block, dropping a dangling sixth bit group."""
    out: list[bytes] = []
    for block in _B64_BLOCKS.findall(_B64_JUNK.sub(b"", data)):
        if len(block) % 4 == 1:
            block = block[:-1]
        if block:
            out.append(binascii.a2b_base64(block + b"=" * (-len(block) % 4)))
    return b"".join(out)


def decode_base64(payload: str | bytes) -> tuple[bytes, bool]:
    """Base64 body to bytes; returns (data, clean)."""
    if isinstance(payload, str):
        if payload.isascii():
            # Fast path: a2b_base64 takes ASCII str and skips line breaks (no copy). It also
            # skips junk and stops at the first padding, so compare the output length with
            # the number of base64 characters to know whether a repair was needed.
            try:
                data = binascii.a2b_base64(payload)
            except (binascii.Error, ValueError):
                return _b64_lenient(payload.encode("ascii")), False
            chars = len(payload) - sum(payload.count(c) for c in "\r\n \t")
            tail = payload.rstrip()
            pad = len(tail) - len(tail.rstrip("="))
            if len(data) == (chars - pad) * 3 // 4:
                return data, True
            return _b64_lenient(payload.encode("ascii")), False
        return _b64_lenient(payload.encode("ascii", "surrogateescape")), False
    return _b64_lenient(payload), False


def decode_qp(payload: str | bytes) -> bytes:
    """Quoted-printable to bytes; invalid ``=XX`` escapes are kept as written (RFC 2045 6.7)."""
    if isinstance(payload, str):
        payload = (
            payload.encode("ascii")
            if payload.isascii()
            else payload.encode("ascii", "surrogateescape")
        )
    return binascii.a2b_qp(payload)


def raw_payload(part: Message) -> str | bytes:
    """The undecoded body of a leaf part as the parser stored it.

    ``Message.get_payload()`` re-decodes 8-bit text with the declared charset and 'replace';
    mailgate wants the bytes, so it reads the stored payload directly.
    """
    payload = part._payload  # type: ignore[attr-defined]
    if isinstance(payload, (str, bytes)):
        return payload
    return ""


def children(part: Message) -> list[Message] | None:
    """Sub-parts of a multipart as parsed, or None for a leaf (never re-decodes anything)."""
    payload = part._payload  # type: ignore[attr-defined]
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    return None


def to_bytes(payload: str | bytes) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if payload.isascii():
        return payload.encode("ascii")
    return payload.encode("ascii", "surrogateescape")


def decode_body(part: Message, cte: str) -> tuple[bytes, str | None]:
    """Decode a leaf's body per its Content-Transfer-Encoding; returns (bytes, problem or None)."""
    payload = raw_payload(part)
    if not cte or cte in ("7bit", "8bit", "binary"):
        return to_bytes(payload), None
    if cte == "base64":
        data, clean = decode_base64(payload)
        return data, None if clean else "base64 body needed repair (padding or junk)"
    if cte == "quoted-printable":
        return decode_qp(payload), None
    if cte in ("x-uuencode", "uuencode", "x-uue", "uue"):
        try:
            decoded = part.get_payload(decode=True)
        except (ValueError, TypeError, LookupError):
            decoded = None
        undecoded = to_bytes(payload)
        # On a bad body the stdlib returns the undecoded bytes, no error: compare.
        if isinstance(decoded, bytes) and (decoded != undecoded or not undecoded.strip()):
            return decoded, None
        return undecoded, UUENCODE_FAILED
    if cte == "x-gzip64":
        # Old MIME-tools convention: gzip, then base64. Inflated with a bound (zip bombs).
        packed, _ = decode_base64(payload)
        inflater = zlib.decompressobj(wbits=31)
        try:
            data = inflater.decompress(packed, _MAX_INFLATE)
        except zlib.error:
            return packed, "x-gzip64 body is not gzip; kept base64-decoded"
        if inflater.unconsumed_tail:
            return packed, GZIP64_TOO_BIG
        return data, None
    # Misspelled names seen in the wild: "base-64", "Base64 ", "quoted-printable;".
    if "64" in cte:
        data, _ = decode_base64(payload)
        return data, f"unknown transfer encoding {cte!r} read as base64"
    if "quot" in cte:
        return decode_qp(payload), f"unknown transfer encoding {cte!r} read as quoted-printable"
    return to_bytes(payload), f"unknown transfer encoding {cte!r} left undecoded"
