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

import importlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import ahocorasick_rs

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


def strip_leading_assertion(pattern: str) -> str | None:
    """The pattern without a leading ``\\b`` or lookbehind, or None when it has none.

    Such a start disables ``re``'s literal-prefix scan (``\\bPO-\\d+`` searches ~100x slower
    than ``PO-\\d+``); the assertion is checked afterwards by matching the full pattern at
    each candidate position.
    """
    if pattern.startswith("\\b"):
        return pattern[2:]
    if pattern.startswith(("(?<!", "(?<=")):
        depth = 0
        i = 0
        while i < len(pattern):
            c = pattern[i]
            if c == "\\":
                i += 2
                continue
            if c == "[":
                close = pattern.find("]", i + 2)
                if close < 0:
                    return None
                i = close + 1
                continue
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
                if depth == 0:
                    return pattern[i + 1 :]
            i += 1
    return None


def _parse(pattern: str, flags: int) -> tuple[Any, list[tuple[Any, Any]]] | None:
    """re's own parse of ``pattern`` (its constants module and the items), or None: the modules
    are private and may change, and then the fast paths are simply not taken."""
    try:
        c: Any = importlib.import_module("re._constants")
        parser: Any = importlib.import_module("re._parser")
        return c, list(parser.parse(pattern, flags))
    except Exception:
        return None


def literal_prefixes(pattern: str, flags: int) -> tuple[str, ...] | None:
    """The literal strings every match of ``pattern`` starts with (one per alternative), or
    None when some match can start otherwise (a class, a repeat, an empty alternative).

    ``(?:order|bestellung|commande)\\s*…`` gives ``("order", "bestellung", "commande")``. re
    searches such an alternation by testing a set of first characters at every position;
    ``str.find`` for each literal is several times faster.
    """
    if flags & (re.IGNORECASE | re.VERBOSE):
        return None
    parsed = _parse(pattern, flags)
    if parsed is None:
        return None
    c, items = parsed

    def walk(seq: list[tuple[Any, Any]]) -> tuple[str, ...] | None:
        if not seq:
            return None
        op, av = seq[0]
        if op is c.LITERAL:
            chars = []
            for op2, av2 in seq:
                if op2 is not c.LITERAL:
                    break
                chars.append(chr(av2))
            return ("".join(chars),)
        if op is c.SUBPATTERN:
            _group, add, remove, sub = av
            return None if add or remove else walk(list(sub))
        if op is c.BRANCH:
            out: list[str] = []
            for alt in av[1]:
                found = walk(list(alt))
                if found is None:
                    return None
                out.extend(found)
            return tuple(out)
        return None

    try:
        return walk(items)
    except Exception:
        return None


def required_literals(pattern: re.Pattern[str]) -> tuple[str, ...] | None:
    """Strings one of which every match of ``pattern`` contains, or None when no useful set is
    known (then the pattern must simply be searched).

    A body pattern is a long alternation of phrases; ``re`` tries it at every position of the
    body (~0.1 ms per pattern for 3000 characters), while testing a handful of substrings costs
    microseconds. Read from the parsed pattern: a run of literal characters is in every match
    of its sequence, a branch needs one of its alternatives' literals, a repeat of at least
    once needs its body's; of a sequence's candidates the one with the longest shortest
    literal is kept.
    """
    if pattern.flags & (re.IGNORECASE | re.VERBOSE):
        return None
    parsed = _parse(pattern.pattern, pattern.flags & ~re.UNICODE)
    if parsed is None:
        return None
    c, items = parsed
    repeats = {c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", c.MAX_REPEAT)}

    def better(a: tuple[str, ...] | None, b: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if b is None or (a is not None and min(map(len, a)) >= min(map(len, b))):
            return a
        return b

    def sequence(seq: list[tuple[Any, Any]]) -> tuple[str, ...] | None:
        best: tuple[str, ...] | None = None
        run: list[str] = []
        for op, av in seq:
            if op is c.LITERAL:
                run.append(chr(av))
                continue
            if run:
                best = better(best, ("".join(run),))
                run = []
            found: tuple[str, ...] | None = None
            if op is c.SUBPATTERN:
                _group, add, remove, sub = av
                found = None if add or remove else sequence(list(sub))
            elif op is c.BRANCH:
                alternatives = [sequence(list(alt)) for alt in av[1]]
                if all(a is not None for a in alternatives):
                    found = tuple(sorted({lit for a in alternatives if a for lit in a}))
            elif op in repeats and av[0] >= 1:
                found = sequence(list(av[2]))
            best = better(best, found)
        if run:
            best = better(best, ("".join(run),))
        return best

    try:
        found = sequence(items)
    except Exception:
        return None
    if found is None or min(map(len, found)) < 2 or len(found) > 32:
        return None
    # a literal holding a shorter one of the set adds nothing: the shorter one is tested
    return tuple(a for a in found if not any(b != a and b in a for b in found))


MIN_PREFIX = 3
"""Shortest literal worth a ``str.find`` pass (shorter ones match too often)."""


def utf8_safe(text: str) -> bool:
    """Whether ``text`` has no lone surrogate, so UTF-8 can carry it (ahocorasick_rs needs that:
    given a pattern with one, it silently loses the patterns after it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


WINDOW = 8192
"""Characters searched for a pattern's literal prefixes at a time (``CiPattern._candidates``)."""
FIRST_WINDOW = 512
"""First window of ``CiPattern._next_literal`` (later ones double, up to 8 ``WINDOW``)."""


@dataclass(frozen=True)
class CiPattern:
    """A regex searched fast: case-insensitively through lowered text, and without a leading
    assertion that would disable the prefix scan; every candidate is confirmed by matching the
    full original pattern at its position, so results equal ``original.search``/``finditer``."""

    original: re.Pattern[str]
    scan: re.Pattern[str]
    lowered: bool
    prefixes: tuple[str, ...] | None = None
    """Literals every scan match starts with, when there are several (an alternation) and
    all are long enough: candidates are then found with one Aho-Corasick pass, not
    ``scan.search``."""
    automaton: Any = field(default=None, compare=False, repr=False)
    """``ahocorasick_rs.AhoCorasick`` over ``prefixes`` (leftmost-first, non-overlapping)."""
    gate: Any = field(default=None, compare=False, repr=False)
    """``ahocorasick_rs.BytesAhoCorasick`` over the literals every scan match starts with (one
    or several, each of two characters or more; leftmost-first), used on ASCII text: the same
    search over the text's bytes runs ~10x faster than over a ``str`` (whose offsets the
    library must map to characters) and than ``re``'s own prefix scan, so a search skips to
    where a literal occurs — past the whole body when none does, the usual case."""
    gate_longest: int = 0
    """Length of the gate's longest literal (a window overlaps the next by one less)."""

    @classmethod
    def compile(cls, pattern: str, flags: int) -> CiPattern:
        original = re.compile(pattern, flags)
        body = pattern
        scan_flags = flags
        lowered = False
        if flags & re.IGNORECASE:
            low = lower_pattern(pattern)
            if low is not None:
                body, scan_flags, lowered = low, flags & ~re.IGNORECASE, True
        stripped = strip_leading_assertion(body)
        if stripped:
            body = stripped
        try:
            scan = re.compile(body, scan_flags) if (lowered or stripped) else original
        except re.error:
            scan, lowered = original, False
        found = literal_prefixes(body, scan_flags) if scan is not original else None
        literals = tuple(sorted(set(found))) if found else ()
        shortest = min(map(len, literals), default=0)
        prefixes = literals if len(literals) > 1 and shortest >= MIN_PREFIX else None
        automaton = gate = None
        longest = 0
        if prefixes and all(map(utf8_safe, prefixes)):
            automaton = ahocorasick_rs.AhoCorasick(
                list(prefixes), matchkind=ahocorasick_rs.MatchKind.LeftmostFirst
            )
        if literals and shortest >= 2 and all(map(utf8_safe, literals)):
            gate = ahocorasick_rs.BytesAhoCorasick(
                [lit.encode("utf-8") for lit in literals],
                matchkind=ahocorasick_rs.MatchKind.LeftmostFirst,
            )
            longest = max(map(len, literals))
        return cls(original, scan, lowered, prefixes, automaton, gate, longest)

    def _candidates(self, hay: str, start: int) -> Iterator[int]:
        """Every position from ``start`` where one of ``prefixes`` occurs, in order, found a
        window at a time: a caller that stops early (the first match, or enough values) does
        not pay for the rest of the text.

        One Aho-Corasick pass per window instead of one ``str.find`` pass per literal (4
        literals over 100 KB: ~150 → ~90 µs). Its matches do not overlap, so the positions
        inside each match are checked for a literal too: every occurrence is a candidate.
        """
        assert self.prefixes is not None
        prefixes = self.prefixes
        n = len(hay)
        longest = max(map(len, prefixes))
        for lo in range(start, n, WINDOW):
            width = min(WINDOW, n - lo)  # candidates start in hay[lo : lo + width]
            piece = hay[lo : lo + width + longest - 1]
            found: list[int] = []
            matches = self._automaton_matches(piece)
            if matches is None:  # one find a literal
                matches = []
                for lit in prefixes:
                    at = piece.find(lit)
                    while 0 <= at < width:
                        found.append(at)
                        at = piece.find(lit, at + 1)
            for _, a, b in matches:
                if a >= width:
                    break
                found.append(a)
                found.extend(
                    q for q in range(a + 1, min(b, width)) if piece.startswith(prefixes, q)
                )
            if len(found) > 1:
                found = sorted(set(found))
            for at in found:
                yield lo + at

    def _automaton_matches(self, piece: str) -> list[tuple[int, int, int]] | None:
        """The automaton's matches in ``piece``; None where it cannot look (no automaton, or
        a lone surrogate, which a broken charset leaves in text and UTF-8 cannot carry)."""
        if self.automaton is None:
            return None
        matches: list[tuple[int, int, int]]
        if self.gate is not None and piece.isascii():  # byte offsets are character offsets
            matches = self.gate.find_matches_as_indexes(piece.encode("ascii"))
            return matches
        try:
            matches = self.automaton.find_matches_as_indexes(piece)
        except UnicodeEncodeError:
            return None
        return matches

    def _next_literal(self, hay: str, pos: int) -> int:
        """Where a literal of ``gate`` next occurs in ``hay`` at or after ``pos``; ``len(hay)``
        when none does. Searched in windows that double from `FIRST_WINDOW`, so a text dense
        with literals costs a short window per call; a window that is not ASCII (the gate's
        offsets would be bytes) ends the skip there and the regex scans on from it."""
        n = len(hay)
        longest = self.gate_longest
        lo = pos
        width = FIRST_WINDOW
        while lo < n:
            piece = hay[lo : lo + width + longest - 1]
            if not piece.isascii():
                return lo
            first = self.gate.find_matches_as_indexes(piece.encode("ascii"))
            if first and first[0][1] < width:  # leftmost-first: the earliest start comes first
                return lo + int(first[0][1])
            lo += width
            width = min(width * 2, WINDOW * 8)
        return n

    def _skip(self, hay: str, pos: int) -> tuple[int, bool]:
        """(where the scan goes on, whether to skip again next time): a literal found close to
        ``pos`` means text dense with them, where ``re``'s own scan is cheaper than a call to
        the gate per match (a body of 36 000 ``PO-123``: ~70 ms instead of ~7 ms)."""
        nxt = self._next_literal(hay, pos)
        return nxt, nxt - pos >= FIRST_WINDOW

    def _haystack(self, text: str, lowered: str | None) -> tuple[re.Pattern[str], str]:
        if not self.lowered:
            return self.scan, text
        low = lowered if lowered is not None else text.lower()
        if len(low) != len(text):  # lower-casing changed offsets (e.g. "İ"): the slow way
            return self.original, text
        return self.scan, low

    def search(self, text: str, lowered: str | None = None) -> re.Match[str] | None:
        """First match; ``lowered`` is ``text.lower()`` when the caller has it cached."""
        scan, hay = self._haystack(text, lowered)
        if scan is self.original:
            return self.original.search(text)
        if self.prefixes is not None:
            for at in self._candidates(hay, 0):
                real = self.original.match(text, at)
                if real is not None:
                    return real
            return None
        pos = 0
        n = len(hay)
        skipping = self.gate is not None
        while True:
            if skipping:
                pos, skipping = self._skip(hay, pos)
                if pos >= n:
                    return None
            m = scan.search(hay, pos)
            if m is None:
                return None
            real = self.original.match(text, m.start())
            if real is not None:
                return real
            pos = m.start() + 1

    def finditer(self, text: str, lowered: str | None = None) -> Iterator[re.Match[str]]:
        """The matches of ``original.finditer``, lazily: a caller that has enough stops early."""
        scan, hay = self._haystack(text, lowered)
        if scan is self.original:
            yield from self.original.finditer(text)
            return
        pos = 0
        if self.prefixes is not None:
            for at in self._candidates(hay, 0):
                if at < pos:
                    continue
                real = self.original.match(text, at)
                if real is None:
                    continue
                yield real
                pos = real.end() if real.end() > real.start() else real.end() + 1
            return
        n = len(text)
        skipping = self.gate is not None
        while pos <= n:
            if skipping:
                pos, skipping = self._skip(hay, pos)
                if pos >= n:
                    break
            m = scan.search(hay, pos)
            if m is None:
                break
            real = self.original.match(text, m.start())
            if real is None:
                pos = m.start() + 1
                continue
            yield real
            pos = real.end() if real.end() > real.start() else real.end() + 1


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
