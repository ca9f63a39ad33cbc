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


def test_skipping_to_the_next_literal_finds_what_re_finds_in_long_texts() -> None:
    """A pattern with one literal prefix is searched by ``re`` from where the byte automaton
    (the gate) says a literal next occurs: across the doubling windows, with literals on their
    edges, in ASCII text and where a window holds other characters (the gate cannot look and
    the regex scans on from there)."""
    from mailgate.pipeline.fastre import FIRST_WINDOW

    rng = random.Random(5)
    patterns = [
        (r"\bPO[- ]?\d{3,10}\b", 0),
        (r"(?<![A-Za-z0-9])T-\d{1,10}\b", 0),
        (r"\bref:\s*\d+", re.IGNORECASE),
    ]
    edges = [FIRST_WINDOW * (2**k - 1) for k in range(1, 8)]  # where windows start
    pieces = ["lorem ", "PO-123 ", "XPO-1234 ", "T-5", "aT-77 ", "Ref: 9 ", "ref:", "é", "\n", "P"]
    for pattern, flags in patterns:
        fast = CiPattern.compile(pattern, flags)
        slow = re.compile(pattern, flags)
        assert fast.gate is not None and fast.prefixes is None, pattern
        for size in (30, FIRST_WINDOW + 7, 40_000, 120_000):
            for ascii_only in (True, False):
                text = ""
                while len(text) < size:
                    piece = rng.choice(pieces) if rng.random() < 0.02 else "lorem ipsum "
                    if ascii_only and not piece.isascii():
                        continue
                    text += piece
                for edge in edges:  # a literal straddling or starting on a window's edge
                    if edge + 8 < len(text):
                        at = edge - rng.randint(0, 2)
                        text = text[:at] + " PO-4711 T-12 ref: 3 " + text[at + 21 :]
                low = text.lower()
                want = [m.span() for m in slow.finditer(text)]
                assert [m.span() for m in fast.finditer(text, low)] == want, pattern
                first = fast.search(text, low)
                assert (first and first.span()) == (want[0] if want else None), pattern
        # text dense with literals (the skip stops; re scans on) and a sparse tail after it
        dense = "PO-4711 T-12 ref: 3 " * 3000 + "lorem ipsum " * 3000 + "PO-1 ref: 2"
        assert [m.span() for m in fast.finditer(dense, dense.lower())] == [
            m.span() for m in slow.finditer(dense)
        ], pattern
    # nothing to find: the gate skips the whole body
    fast = CiPattern.compile(r"\bPO-\d+", 0)
    assert fast._next_literal("x" * 100_000, 0) == 100_000
    assert fast._next_literal("x" * 100_000 + "PO-1", 5) == 100_000
    assert fast.search("x" * 100_000) is None
