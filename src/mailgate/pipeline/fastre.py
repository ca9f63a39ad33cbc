"""Case-insensitive regex search without ``re.IGNORECASE``'s cost.

CPython's ``re`` loses its literal-prefix and charset fast paths under ``IGNORECASE``: a search
for ``/invoice|refund/i`` over a large body runs ~20x slower than the same search without the
flag. Rules and entity patterns are mostly written ``/…/i`` and run on every message, so the
pipeline instead lower-cases the pattern (outside escapes, group names and backreferences) and
searches the lower-cased text, which it caches per run. Matches map back to the original text
by position when lower-casing kept the length (always for ASCII; a few Unicode letters such as
``İ`` grow, and for those texts the original ``IGNORECASE`` pattern is used).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNSAFE_RANGE = re.compile(r"[A-Z]-[a-z]|[a-z]-[A-Z]")


def lower_pattern(pattern: str) -> str | None:
    """The pattern with literal letters lower-cased, or None when that could change its meaning."""
    if _UNSAFE_RANGE.search(pattern):
        return None
    out: list[str] = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 < n and pattern[i + 1] in "NgpPu":  # \N{NAME}, \g<name>: keep verbatim
                return None
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if pattern.startswith("(?P<", i) or pattern.startswith("(?P=", i):
            end = pattern.find(">" if pattern[i + 3] == "<" else ")", i)
            if end < 0:
                return None
            out.append(pattern[i : end + 1])
            i = end + 1
            continue
        out.append(c.lower())
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class CiPattern:
    """A regex searched case-insensitively through a lower-cased copy of the text."""

    original: re.Pattern[str]
    lowered: re.Pattern[str] | None

    @classmethod
    def compile(cls, pattern: str, flags: int) -> CiPattern:
        original = re.compile(pattern, flags)
        lowered = None
        if flags & re.IGNORECASE:
            low = lower_pattern(pattern)
            if low is not None:
                try:
                    lowered = re.compile(low, flags & ~re.IGNORECASE)
                except re.error:
                    lowered = None
        return cls(original, lowered)

    def search(self, text: str, lowered: str | None = None) -> re.Match[str] | None:
        """First match; ``lowered`` is ``text.lower()`` when the caller has it cached."""
        if self.lowered is None:
            return self.original.search(text)
        low = lowered if lowered is not None else text.lower()
        if len(low) != len(text):
            return self.original.search(text)
        m = self.lowered.search(low)
        if m is None:
            return None
        # Re-run the original pattern at the found position to get a match on the real text.
        return self.original.match(text, m.start()) or self.original.search(text, m.start())

    def finditer(self, text: str, lowered: str | None = None) -> list[re.Match[str]]:
        if self.lowered is None:
            return list(self.original.finditer(text))
        low = lowered if lowered is not None else text.lower()
        if len(low) != len(text):
            return list(self.original.finditer(text))
        out = []
        for m in self.lowered.finditer(low):
            real = self.original.match(text, m.start())
            if real is not None and real.end() == m.end():
                out.append(real)
        return out


def split_inline_flags(pattern: str) -> tuple[str, int]:
    """``(?i)foo`` -> (``foo``, re.IGNORECASE): leading global inline flags become flags."""
    m = re.match(r"^\(\?([aimsx]+)\)", pattern)
    if m is None:
        return pattern, 0
    flags = 0
    for ch in m.group(1):
        flags |= {
            "a": re.ASCII,
            "i": re.IGNORECASE,
            "m": re.MULTILINE,
            "s": re.DOTALL,
            "x": re.VERBOSE,
        }[ch]
    return pattern[m.end() :], flags
