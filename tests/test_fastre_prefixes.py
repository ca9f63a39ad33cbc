"""CiPattern's literal-prefix search finds exactly what the original regex finds."""

from __future__ import annotations

import random
import re

from mailgate.pipeline.fastre import CiPattern, literal_prefixes, split_inline_flags

WORDS = [
    "order", "Order", "ORDER #12345", "invoice", "INVOICE INV-2024-001", "refund", "re fund",
    "bestellung 123456", "İnvoice", "x", "  ", "#", "12345", "PO-12345", "commande: 5555", "\n",
    "orderorder", "invoiceinvoice", "Rechnung Nr. 77",
]  # fmt: skip
PATTERNS = [
    r"(?i)\b(?:order|bestellung|commande|pedido)\s*#?\s*(?P<value>\d{4,12})\b",
    r"(?i)\b(?:invoice|rechnung|refund)\b",
    r"(?i)(?<![a-z])(?:order|invoice)",
    r"(?i)(?:orde|order)r?",  # factored to one prefix "orde": the regex search stays
    r"(?i)(?:refund|return)s?",  # common prefix "re": too short, the regex search stays
    r"(?i)(?:order|invoice)?x",  # optional: no prefix
]


def test_literal_prefixes() -> None:
    assert literal_prefixes("(?:order|refund)\\s+x", 0) == ("order", "refund")
    assert literal_prefixes("(?P<v>abc|defg)", 0) == ("abc", "defg")
    assert literal_prefixes("(?:invoice|inv)x", 0) == ("inv",)  # re factors the common prefix
    assert literal_prefixes("(?:a|)b", 0) is None
    assert literal_prefixes("[ab]cd", 0) is None
    assert literal_prefixes("(?:ab)*c", 0) is None
    assert literal_prefixes("abc", re.IGNORECASE) is None


def test_prefix_search_equals_the_original_regex() -> None:
    rng = random.Random(5)
    with_prefixes = 0
    for rx in PATTERNS:
        body, flags = split_inline_flags(rx)
        fast = CiPattern.compile(body, flags)
        orig = re.compile(body, flags)
        with_prefixes += fast.prefixes is not None
        for _ in range(800):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 15)))
            low = text.lower()
            assert [m.span() for m in fast.finditer(text, low)] == [
                m.span() for m in orig.finditer(text)
            ], (rx, text)
            first, want = fast.search(text, low), orig.search(text)
            assert (first.span() if first else None) == (want.span() if want else None)
    assert with_prefixes == 3


def test_candidates_are_every_occurrence_across_windows_and_overlaps() -> None:
    """The one-pass candidate search (Aho-Corasick, non-overlapping matches plus the positions
    inside each) yields every start of every literal, also where literals overlap each other
    and where they straddle a window's edge."""
    from mailgate.pipeline.fastre import WINDOW

    rng = random.Random(11)
    fast = CiPattern.compile(r"\b(?:abcd|cdefg|bcdx)y?", re.IGNORECASE)
    assert fast.prefixes == ("abcd", "bcdx", "cdefg")
    # "\udcff": a lone surrogate (what a broken charset leaves) cannot go to the automaton
    pieces = ["abcdefg", "abcdx", "cdefg", "abc", "x", " ", "bcdxbcdx", "ABCD", "\udcffabcd"]
    for size in (10, WINDOW - 3, WINDOW * 3 + 5):
        for _ in range(20):
            text = ""
            while len(text) < size:
                text += rng.choice(pieces)
            # a literal exactly on each window edge
            for edge in range(WINDOW, len(text), WINDOW):
                text = text[: edge - 2] + "abcdefg" + text[edge + 5 :]
            low = text.lower()
            want = sorted(
                i for lit in fast.prefixes for i in range(len(low)) if low.startswith(lit, i)
            )
            assert list(fast._candidates(low, 0)) == want
            orig = re.compile(r"\b(?:abcd|cdefg|bcdx)y?", re.IGNORECASE)
            assert [m.span() for m in fast.finditer(text, low)] == [
                m.span() for m in orig.finditer(text)
            ]


def test_prefix_literals_the_automaton_cannot_take_are_found_one_by_one() -> None:
    pattern = "(?:abc\udcff|bcde|cdefg)x"
    fast = CiPattern.compile(pattern, re.IGNORECASE)
    assert fast.prefixes is not None and fast.automaton is None
    for text in ("zzABC\udcffx bcdeX cdefgx", "bcdex", "nothing here", "abc\udcffx" * 3000):
        want = [m.span() for m in re.finditer(pattern, text, re.IGNORECASE)]
        assert [m.span() for m in fast.finditer(text, text.lower())] == want
