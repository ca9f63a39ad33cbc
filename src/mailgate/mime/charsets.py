"""Charset labels and byte decoding that never fails and never yields lone surrogates.

Real mail mislabels its charsets: ``ks_c_5601-1987`` (really cp949), ``gb2312`` on GBK text,
``iso-8859-8-i`` (RFC 1556 logical order, same bytes as iso-8859-8), ``x-unknown``, ``utf8``,
``us-ascii`` on UTF-8 bytes, or no label at all on 8-bit text. This module maps labels to the
widest Python codec that decodes them (as the WHATWG Encoding Standard does for browsers) and
decodes with a fixed fallback order: declared charset, UTF-8, cp1252, latin-1. Undecodable bytes
become U+FFFD. It owns no MIME structure; callers pass bytes and a label.
"""

from __future__ import annotations

import codecs
import re
from functools import lru_cache

# Labels Python does not know, or knows only as a narrower codec than what senders really use.
# Superset choices follow the WHATWG Encoding Standard (gb2312/gbk -> gb18030, iso-8859-1 and
# us-ascii -> windows-1252, euc-kr -> windows-949, shift_jis -> windows-31j).
_ALIASES: dict[str, str] = {
    "utf8": "utf-8",
    "utf-8": "utf-8",
    "unicode-1-1-utf-8": "utf-8",
    "x-unicode20utf8": "utf-8",
    "us-ascii": "ascii",
    "ascii": "ascii",
    "ansi_x3.4-1968": "ascii",
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "iso_8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "l1": "cp1252",
    "windows-1252": "cp1252",
    "win-1252": "cp1252",
    "cp-1252": "cp1252",
    "x-cp1252": "cp1252",
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-8-e": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6",
    "iso-8859-6-e": "iso-8859-6",
    "latin-9": "iso-8859-15",
    "latin9": "iso-8859-15",
    "gb2312": "gb18030",
    "gb_2312-80": "gb18030",
    "gb_2312": "gb18030",
    "csgb2312": "gb18030",
    "x-gbk": "gb18030",
    "gbk": "gb18030",
    "cp936": "gb18030",
    "euc-cn": "gb18030",
    "x-euc-cn": "gb18030",
    "chinese": "gb18030",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601-1989": "cp949",
    "ks_c_5601": "cp949",
    "ksc5601": "cp949",
    "ksc_5601": "cp949",
    "euc-kr": "cp949",
    "x-euc-kr": "cp949",
    "korean": "cp949",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "ms_kanji": "cp932",
    "windows-31j": "cp932",
    "csshiftjis": "cp932",
    "iso-2022-jp": "iso2022_jp_ext",
    "csiso2022jp": "iso2022_jp_ext",
    "big5": "big5hkscs",
    "x-x-big5": "big5hkscs",
    "big5-hkscs": "big5hkscs",
    "tis-620": "cp874",
    "windows-874": "cp874",
    "iso-8859-11": "cp874",
    "x-mac-roman": "mac-roman",
    "macintosh": "mac-roman",
    "x-mac-cyrillic": "mac-cyrillic",
    "x-mac-greek": "mac-greek",
    "x-mac-turkish": "mac-turkish",
    "x-mac-iceland": "mac-iceland",
    "x-mac-ce": "mac-latin2",
    "koi8-u": "koi8-u",
    "koi8r": "koi8-r",
    "cp-850": "cp850",
    "ibm850": "cp850",
    "unicode-1-1-utf-7": "utf-7",
    "utf7": "utf-7",
    "ucs-2": "utf-16",
    "unicode": "utf-16",
}

# Labels that say "we do not know": decode as if no charset were given.
_UNKNOWN = frozenset(
    {
        "",
        "x-unknown",
        "unknown",
        "unknown-8bit",
        "x-user-defined",
        "default",
        "charset",
        "none",
        "us",
        "8bit",
        "binary",
    }
)

_CLEAN_LABEL = re.compile(r"[\s\"'<>]+")
_SURROGATES = re.compile("[\ud800-\udfff]")
# Codecs whose text legitimately has NUL bytes in its encoding.
_WIDE = frozenset({"utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"})


def _latin1_fallback(err: UnicodeError) -> tuple[str, int]:
    """Error handler: map each undecodable byte to the latin-1 code point of the same value."""
    if not isinstance(err, UnicodeDecodeError):
        raise err
    chunk = err.object[err.start : err.end]
    return bytes(chunk).decode("latin-1"), err.end


codecs.register_error("mailgate-latin1", _latin1_fallback)


@lru_cache(maxsize=512)
def codec_for(label: str | None) -> str | None:
    """The Python codec name for a MIME charset label, or None when it is unknown/unusable.

    ``None`` means "no usable label": the caller falls back to UTF-8, then cp1252.
    """
    if label is None:
        return None
    name = _CLEAN_LABEL.sub("", label).lower()
    # RFC 2231 section 5: a language suffix may follow the charset ("utf-8*en").
    name = name.split("*", 1)[0]
    if name in _UNKNOWN:
        return None
    name = _ALIASES.get(name, name)
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    # Transform codecs (base64, rot13, zlib, ...) are not text encodings: refuse them as labels.
    if not getattr(info, "_is_text_encoding", True):
        return None
    return info.name


_ESC = re.compile(rb"\x1b(\(B|\(J|\(I|\$@|\$B|\$\(D|\$\(Q|\$\(O)")


def iso2022jp_as_cp932(data: bytes) -> str | None:
    """ISO-2022-JP as Windows writes it (CP50220/50221): JIS X 0208 plus the NEC row 13 and
    IBM extension characters (①, ㈱, 髙) that no Python ISO-2022-JP codec knows.

    Each two-byte JIS code is moved to its Shift_JIS position (JIS X 0208 annex 1) and the
    result decoded as cp932, which holds those extensions. None if the bytes do not fit.
    """
    out = bytearray()
    mode = b"(B"
    pos = 0
    for m in _ESC.finditer(data):
        _iso2022_chunk(data[pos : m.start()], mode, out)
        mode = m.group(1)
        pos = m.end()
    _iso2022_chunk(data[pos:], mode, out)
    try:
        return out.decode("cp932")
    except UnicodeDecodeError:
        return None


def _iso2022_chunk(chunk: bytes, mode: bytes, out: bytearray) -> None:
    if mode in (b"(B", b"(J"):
        out += chunk
    elif mode == b"(I":  # JIS X 0201 katakana: 0x21-0x5F -> 0xA1-0xDF
        out += bytes(b | 0x80 if 0x21 <= b <= 0x5F else b for b in chunk)
    else:
        i = 0
        n = len(chunk)
        while i < n:
            j1 = chunk[i]
            if j1 in (0x0A, 0x0D) or i + 1 >= n:  # line breaks pass through
                out.append(j1)
                i += 1
                continue
            j2 = chunk[i + 1]
            s1 = (j1 + 1) // 2 + 0x70
            if s1 >= 0xA0:
                s1 += 0x40
            # odd rows map to the low half of the trail byte range, skipping 0x7F
            s2 = (j2 + 0x1F + (1 if j2 >= 0x60 else 0)) if j1 % 2 else (j2 + 0x7E)
            out += bytes((s1 & 0xFF, s2 & 0xFF))
            i += 2


def scrub(text: str) -> str:
    """Replace lone surrogates and NUL with U+FFFD: the text always encodes as UTF-8 and fits
    a JSON/PostgreSQL text column (which refuses U+0000)."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", text)
    return text


def decode_bytes(data: bytes, label: str | None = None) -> tuple[str, bool]:
    """Decode ``data`` declared as ``label``; return (text, clean).

    ``clean`` is False when the declared charset did not fit and a fallback (or U+FFFD) was
    used, so the caller can note it in ``parseErrors``.
    Order: declared codec (strict), UTF-8 (strict), then for 8-bit text with no usable label
    cp1252 with latin-1 for its five undefined bytes; a declared multi-byte codec that fails
    keeps its decoding with U+FFFD for the bad sequences.
    """
    if b"\x00" in data and codec_for(label) not in _WIDE:
        return scrub(decode_bytes(data.replace(b"\x00", b""), label)[0]), False
    if data.isascii():
        codec = codec_for(label)
        # 7-bit charsets (ISO-2022-*, UTF-7, UTF-16 has NULs) still need their codec.
        if codec is None or codec in {"ascii", "utf-8", "cp1252"} or codec.startswith("iso8859"):
            return data.decode("ascii"), True
        try:
            return scrub(data.decode(codec)), True
        except (UnicodeDecodeError, LookupError):
            if codec.startswith("iso2022_jp"):
                text = iso2022jp_as_cp932(data)
                if text is not None:
                    return text, True
            return data.decode(codec, "replace"), False
    codec = codec_for(label)
    if codec is not None and codec != "ascii":
        try:
            return scrub(data.decode(codec)), True
        except (UnicodeDecodeError, LookupError):
            pass
    try:
        text = data.decode("utf-8")
        # Declared us-ascii (or no label) on UTF-8 bytes: UTF-8 is what the sender meant.
        return text, codec is None or codec == "ascii" or codec == "utf-8"
    except UnicodeDecodeError:
        pass
    if codec is not None and codec not in {"ascii", "utf-8"}:
        try:
            return scrub(data.decode(codec, "replace")), False
        except LookupError:
            pass
    guess = mostly_utf8(data)
    if guess is not None:
        return guess, False
    # Declared utf-8 (or nothing) but not UTF-8 at all: almost always Windows-1252/latin-1 text
    # from a client that mislabels ("café" stays "café", not "caf\ufffd").
    return data.decode("cp1252", "mailgate-latin1"), codec is None


def mostly_utf8(data: bytes) -> str | None:
    """UTF-8 with U+FFFD for a few damaged sequences (a name cut mid-character), else None.

    Accepted when the bytes hold at least two well-formed multi-byte characters and no more bad
    sequences than good ones: cp1252 text almost never forms valid UTF-8 sequences.
    """
    text = data.decode("utf-8", "replace")
    bad = text.count("\ufffd") - data.count(b"\xef\xbf\xbd")
    good = len(text) - len(text.encode("ascii", "ignore")) - bad
    if good >= 2 and bad <= good:
        return text
    return None


def decode_8bit_header(raw: bytes) -> str:
    """Raw 8-bit header bytes (RFC 6532 allows UTF-8): UTF-8 if valid, else cp1252/latin-1."""
    if b"\x00" in raw:
        raw = raw.replace(b"\x00", b"")
    if raw.isascii():
        return raw.decode("ascii")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    text = mostly_utf8(raw)
    if text is not None:
        return text
    return raw.decode("cp1252", "mailgate-latin1")


def surrogateescaped_to_bytes(text: str) -> bytes:
    """Bytes behind a str that the stdlib decoded with ``surrogateescape`` (compat32 parsing)."""
    return text.encode("utf-8", "surrogateescape")
