"""Plain-text bodies: format=flowed, line endings, and the new part of a reply (``replyText``).

``replyText`` is what the sender wrote in this message: quoted history (``> ...``, "On ... wrote:",
Outlook's "-----Original Message-----" and "From:/Sent:" blocks, found by quotequail) and the
signature (RFC 3676 section 4.3 ``-- `` separator, and the usual mobile taglines) removed.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable
from itertools import accumulate

import quotequail

try:  # the per-line test quotequail.quote runs; used to test only the lines that can match
    from quotequail._internal import Position, find_pattern_on_line
    from quotequail._patterns import MAX_WRAP_LINES
except ImportError:  # pragma: no cover - another quotequail layout: scan with quote() instead
    find_pattern_on_line = None

_SIG_SEPARATOR = re.compile(r"^-- ?$", re.MULTILINE)
_MOBILE_TAGLINE = re.compile(
    r"\n+(?:Sent from my [^\n]{1,60}|Sent from (?:Mail|Outlook) for [^\n]{1,40}"
    r"|Get Outlook for [^\n]{1,40}|Sent from Yahoo Mail[^\n]{0,40}"
    r"|Von meinem [^\n]{1,60} gesendet|Envoyé de mon [^\n]{1,60})\s*$",
    re.IGNORECASE,
)
_TAGLINE_WINDOW = 200
_QUOTE_LIMIT = 1000
"""Lines searched for a quote intro ("On ... wrote:"); later text is treated as new."""
# Every reply/forward intro quotequail knows (quotequail/_patterns.py) contains one of these
# (lower-cased; substring tests are ~100x cheaper than one big case-insensitive regex).
_QUOTE_KEYS = (
    "wrote:", "schrieb", "écrit", "escribió", "написал", "skrev", "escreveu", "schreef",
    "geschreven", "_" * 32, "forwarded", "original", "ursprüngliche", "weitergeleiteten",
    "réexpédié", "reenviado", "vidarebefordrat", "doorgestuurd", "oorspronkelijk", "transféré",
    "origineel", "пересылаемое",
)  # fmt: skip
_OUTLOOK_SENT = (
    "Sent", "Date", "Gesendet", "Datum", "Envoyé", "Enviado", "Verzonden", "Skickat", "Inviato",
    "Wysłano", "Отправлено",
)  # fmt: skip
_OUTLOOK_HEADER = re.compile(
    r"^[ \t>]*\*?(?:From|Von|De|Van|Från|Da|Od|От):\*?[ \t]+\S[^\n]*\n"
    r"(?:[^\n]*\n){0,2}?"
    rf"[ \t>]*\*?(?:{'|'.join(_OUTLOOK_SENT)}):\*?[ \t]",
    re.MULTILINE,
)
_OUTLOOK_LOOKBACK = 3
"""Lines from the From line of an Outlook header to its Sent line, at most."""
_QUOTE_DATE = re.compile(r"\d{4}/\d{1,2}/\d{1,2} ")


_LONE_CR = re.compile("\r(?!\n)")


def normalize_newlines(text: str) -> str:
    """CRLF and lone CR as LF. A body with CRLF only (mail's usual case) drops its CRs with a
    one-character replace, which is ~4x cheaper than replacing the two-character ``\\r\\n``."""
    if "\r" in text:
        if _LONE_CR.search(text) is None:
            return text.replace("\r", "")
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def unflow(text: str, delsp: bool) -> str:
    """Undo RFC 3676 format=flowed: join soft-broken lines, remove space-stuffing."""
    out: list[str] = []
    buf: list[str] = []
    buf_depth = -1
    for line in text.split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        body = line[depth:]
        if body.startswith(" "):
            body = body[1:]  # space-stuffing (section 4.4)
        if buf and depth != buf_depth:
            out.append(">" * buf_depth + (" " if buf_depth else "") + "".join(buf))
            buf = []
        flowed = body.endswith(" ") and body != "-- "
        if flowed:
            buf.append(body[:-1] if delsp else body)
            buf_depth = depth
            continue
        buf.append(body)
        out.append(">" * depth + (" " if depth else "") + "".join(buf))
        buf = []
        buf_depth = -1
    if buf:
        out.append(">" * buf_depth + (" " if buf_depth > 0 else "") + "".join(buf))
    return "\n".join(out)


def _last_separator(text: str) -> int:
    """Start of the last line that is ``--`` or ``-- `` (``_SIG_SEPARATOR``), or -1.

    Searched backwards from the end with ``str.rfind`` over line starts, so the cost is that
    of the lines after it, not a regex attempt at every position of the body.
    """
    end = len(text)
    if "-" not in text:  # a one-character test (memchr) before the substring scan
        return -1
    while True:
        nl = text.rfind("\n--", 0, end)
        at = nl + 1 if nl >= 0 else (0 if text.startswith("--") else -1)
        if at < 0:
            return -1
        rest = text[at + 2 : at + 4]
        if rest in ("", " ", " \n") or rest[0] == "\n":
            return at
        if nl < 0:
            return -1
        end = nl + 2  # the next candidate starts before this one


ANCHOR_LINES = 256
"""Lines examined one by one around a rare character (``:``, ``@``); past that many, the
whole-text substring scans run instead, so the cost is bounded either way."""


def lines_with(
    text: str, needles: Iterable[str], limit: int = ANCHOR_LINES
) -> list[tuple[int, int]] | None:
    """(start, end) of every line of ``text`` holding one of ``needles``, in order; None when
    there are more than ``limit`` such lines.

    Needles are rare characters (``:``, ``@``) or short rules (``---``): a one-character
    ``str.find`` is memchr, ~40x cheaper than a substring search, so a body with a few such
    lines costs microseconds at any size.
    """
    spans: set[tuple[int, int]] = set()
    for needle in needles:
        at = text.find(needle)
        while at >= 0:
            if len(spans) >= limit:
                return None
            start = text.rfind("\n", 0, at) + 1
            end = text.find("\n", at)
            end = len(text) if end < 0 else end
            spans.add((start, end))
            at = text.find(needle, end)
    return sorted(spans)


def _first_sent_word(text: str) -> int:
    """Start of the first ``<word>:`` of ``_OUTLOOK_SENT`` in ``text``, or -1: what the minimum
    of ``text.find(word + ":")`` over the words gives, found from the colons (a word holds no
    colon, so the first colon preceded by a word ends the earliest one)."""
    colons = 0
    at = text.find(":")
    while at >= 0:
        colons += 1
        if colons > ANCHOR_LINES:  # a colon-heavy text: one substring scan per word
            found = [i for i in (text.find(w + ":") for w in _OUTLOOK_SENT) if i >= 0]
            return min(found) if found else -1
        ends = [at - len(w) for w in _OUTLOOK_SENT if text.endswith(w, 0, at)]
        if ends:
            return min(ends)
        at = text.find(":", at + 1)
    return -1


def _outlook_header(text: str) -> int:
    """Start of the first Outlook reply header (``_OUTLOOK_HEADER``), or -1.

    The header's second line starts with one of ``_OUTLOOK_SENT`` and a colon, so the regex
    (which tries a line start at every position) runs only when such a word occurs, from a few
    lines before the first one.
    """
    first = _first_sent_word(text)
    if first < 0:
        return -1
    start = first
    for _ in range(_OUTLOOK_LOOKBACK + 1):
        start = text.rfind("\n", 0, start)
        if start < 0:
            break
    m = _OUTLOOK_HEADER.search(text, start + 1 if start >= 0 else 0)
    return m.start() if m is not None else -1


def strip_signature(text: str) -> str:
    """Cut at the last ``-- `` signature separator and drop a trailing mobile tagline."""
    at = _last_separator(text)
    if at >= 0:
        text = text[:at]
    text = text.rstrip()
    tail = len(text) - _TAGLINE_WINDOW
    if tail > 0:
        return (text[:tail] + _MOBILE_TAGLINE.sub("", text[tail:])).rstrip()
    return _MOBILE_TAGLINE.sub("", text).rstrip()


def _has_key(line: str) -> bool:
    low = line.lower()
    return any(k in low for k in _QUOTE_KEYS)


def _key_lines(lines: list[str]) -> list[int]:
    """Indexes of lines that may hold a quote key (or a ``YYYY/MM/DD`` date), in order: every
    line where an intro can match is at most ``MAX_WRAP_LINES - 1`` lines after one of them.
    Empty when no intro pattern can match.

    Every intro pattern quotequail knows contains a key, and also a ``:``, ``---`` or the
    underscore rule (the reply and forward patterns) or an ``@`` (the dated gmail pattern),
    within the (at most ``MAX_WRAP_LINES``) lines it spans. So only lines near those rare
    characters are tested for keys, each on its own: the body is searched with one-character
    scans and two short substring scans instead of ~20 substring scans. A body with too many
    such lines is searched key by key (`_key_lines_full`), which gives a superset.
    """
    text = "\n".join(lines)
    if find_pattern_on_line is None:  # another quotequail layout: its patterns are unknown
        return _key_lines_full(lines, text)
    anchors = lines_with(text, (":", "@", "---", "_" * 32))
    if anchors is None:
        return _key_lines_full(lines, text)
    found: set[int] = set()
    if anchors:
        spread = MAX_WRAP_LINES - 1
        index = 0
        pos = 0
        for start, _end in anchors:
            index += text.count("\n", pos, start)
            pos = start
            for k in range(max(0, index - spread), min(len(lines), index + spread + 1)):
                if k not in found and _has_key(lines[k]):
                    found.add(k)
    if "@" in text:
        at = text.find("/")
        index = 0
        pos = 0
        while at >= 0:  # a date's first "/" is 4 digits in: test there, not at every digit
            if at >= 4 and _QUOTE_DATE.match(text, at - 4) is not None:
                index += text.count("\n", pos, at - 4)
                pos = at - 4
                found.add(index)
            at = text.find("/", at + 1)
    return sorted(found)


def _key_lines_full(lines: list[str], text: str) -> list[int]:
    """`_key_lines` by one substring scan per key over the whole text."""
    low = text.lower()
    if len(low) != len(text):  # lower-casing moved offsets (e.g. "İ"): test line by line
        keyed = [i for i, line in enumerate(lines) if any(k in line.lower() for k in _QUOTE_KEYS)]
        dated = [i for i, line in enumerate(lines) if _QUOTE_DATE.search(line)]
        return sorted({*keyed, *dated}) if keyed or (dated and "@" in text) else []
    keys: list[int] = []
    for key in _QUOTE_KEYS:
        at = low.find(key)
        while at >= 0:
            keys.append(at)
            at = low.find(key, at + len(key))
    dates: list[int] = []
    at = text.find("/")
    while at >= 0:  # a date's first "/" is 4 digits in: test there, not at every digit
        if at >= 4 and _QUOTE_DATE.match(text, at - 4) is not None:
            dates.append(at - 4)
        at = text.find("/", at + 1)
    if not keys and not (dates and "@" in text):
        return []
    starts = list(accumulate((len(line) + 1 for line in lines[:-1]), initial=0))
    return sorted({bisect_right(starts, at) - 1 for at in (*keys, *dates)})


def _quote_position(lines: list[str], key_lines: list[int]) -> int | None:
    """The line where quoted history begins (its intro line), as ``quotequail.quote`` finds it.

    quotequail tests every line against every pattern (~0.1 ms a line); here only the lines
    near a key line are tested, with the same per-line test, so the cost follows the number of
    candidate lines instead of the body length, and the first match is the same line.
    """
    assert find_pattern_on_line is not None
    wrap = MAX_WRAP_LINES
    tried: set[int] = set()
    for k in key_lines:
        for n in range(max(0, k - wrap + 1), k + 1):
            if n in tried:
                continue
            tried.add(n)
            if find_pattern_on_line(lines, n, wrap, Position.Begin):
                return n
    return None


def _split_quote(text: str) -> list[tuple[bool, str]]:
    """``[(True, new), (False, quoted)]`` at the first quote intro of the first lines, else
    ``[(True, text)]``.

    Only the first ``_QUOTE_LIMIT`` lines are split off and searched, whatever the body's
    size: the cost of a 10 MB body is that of its first lines.
    """
    if not ("-" in text or "_" in text or ":" in text or "@" in text):
        return [(True, text)]  # no intro can match (see `_key_lines`): not worth a split
    head = text.split("\n", _QUOTE_LIMIT)[:_QUOTE_LIMIT]
    key_lines = _key_lines(head)  # one scan: whether an intro can match, and where
    if not key_lines:
        return [(True, text)]
    if find_pattern_on_line is None:
        try:
            # limit past the end: quotequail would otherwise hide everything after `limit`.
            found: list[tuple[bool, str]] = quotequail.quote(
                "\n".join(head), limit=_QUOTE_LIMIT + 1, quote_intro_line=True
            )
            return found
        except (ValueError, IndexError, RecursionError):
            return [(True, "\n".join(head))]
    try:
        pos = _quote_position(head, key_lines)
    except (ValueError, IndexError, RecursionError):
        return [(True, "\n".join(head))]
    if pos is None:
        return [(True, "\n".join(head))]
    return [(True, "\n".join(head[:pos])), (False, "\n".join(head[pos:]))]


def reply_text(text: str) -> str:
    """The new text of a reply: quoted history and signature removed (quotequail)."""
    if not text.strip():
        return ""
    parts: list[tuple[bool, str]] = [(True, text)]
    found = _split_quote(text)
    if len(found) > 1:
        parts = found
    shown: list[str] = []
    for show, chunk in parts:
        if not show:
            break
        shown.append(chunk)
    fresh = "\n".join(shown)
    # Outlook's plain-text reply header without any separator line (quotequail needs one).
    header = _outlook_header(fresh)
    if header >= 0:
        fresh = fresh[:header]
    # Inline "> " quotes left inside the new part (top-posting without an intro line).
    if ">" in fresh and (fresh.startswith(">") or "\n>" in fresh):
        fresh = "\n".join(line for line in fresh.split("\n") if not line.startswith(">"))
    return strip_signature(fresh).strip()
