"""Entity scans that skip work (card numbers looked for only in digit runs, literal prefixes
found a window at a time) find exactly what the plain regex scan finds."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.config import Config
from mailgate.pipeline import entities as E

PATTERNS = {p.name: p for p in E.build_entities(Config().pipeline)}


def plain_spans(p: E.EntityPattern, text: str) -> list[tuple[int, int]]:
    """What the spans were before: every match of the original regex, validated."""
    out: list[tuple[int, int]] = []
    for m in p.regex.original.finditer(text):
        group: str | int = "value" if "value" in m.re.groupindex else 0
        value, start = m.group(group), m.start(group)
        if not value:
            continue
        if p.validator is None:
            out.append((start, start + len(value)))
        else:
            out.extend((start + a, start + b) for a, b in p.validator(value))
    return out


CARD_PIECES = ["4111 1111 1111 1111", "4111-1111-1111-1111", "5500 0000 0000 0004", "12345",
               " ", "-", "  ", "x", "é", "\n", "0", "378282246310005", "order 4711"]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(CARD_PIECES), max_size=25))
def test_card_spans_from_digit_runs_equal_the_regex_scan(pieces: list[str]) -> None:
    text = "".join(pieces)
    card = PATTERNS["cardNumber"]
    assert card.spans(text) == plain_spans(card, text)


def test_digit_runs_are_the_maximal_runs_of_13_or_more() -> None:
    text = "call 0800 123 4567 or 4111 1111 1111 1111, ref 123456789012"
    runs = E.digit_runs(text)
    # " 0800 123 4567 " (15, spaces included), " 4111 1111 1111 1111" (20), " 123456789012" (13)
    assert runs == [(4, 19), (21, 41), (46, 59)]
    assert E.digit_runs("é 4111 1111 1111 1111") is None  # not ASCII: the regex scans it
    assert E.digit_runs("X" * 1_000_000) == []


ENTITY_PIECES = ["order #12345 ", "Order 998877 ", "invoice INV-2024-001 ", "PO-1234 ",
                 "T-42 ", "bestellung 4711 ", "commande: 55555 ", "lorem ipsum " * 40,
                 "İ", "\n"]  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(ENTITY_PIECES), min_size=50, max_size=400))
def test_windowed_prefix_scan_equals_the_regex_scan(pieces: list[str]) -> None:
    text = "".join(pieces)  # often longer than one window (8192 characters)
    for name in ("orderId", "invoiceId", "poNumber", "ticketId"):
        p = PATTERNS[name]
        assert p.spans(text, text.lower()) == plain_spans(p, text), name


class CountingStr(str):
    """A lowered text that counts the substring searches made on it."""

    finds = 0

    def find(self, *args: object) -> int:  # type: ignore[override]
        CountingStr.finds += 1
        return super().find(*args)  # type: ignore[arg-type]


def test_prefix_scan_stops_with_the_values_it_needs() -> None:
    text = "".join(f"order #{100000 + i} arrived.\n" for i in range(50_000))  # ~1.3 MB
    p = PATTERNS["orderId"]
    CountingStr.finds = 0
    low = CountingStr(text.lower())
    first = list(itertools.islice(p.iter_values(text, low), E.MAX_VALUES))
    assert first == [str(100000 + i) for i in range(E.MAX_VALUES)]
    # the values sit in the first window: its candidates, not the body's 50 000 lines
    assert CountingStr.finds < 4 * 400
    found = E.extract({"text": text}, [p], {"text": low})
    assert found["orderId"] == first


def test_user_card_pattern_is_scanned_by_its_own_regex() -> None:
    card = E.EntityPattern(
        "cardNumber", E.compile_pattern(r"(?P<value>\d{4}(?: \d{4}){3})"), E.luhn_spans, True
    )
    text = "x4111 1111 1111 1111y"
    assert card.spans(text) == plain_spans(card, text) == [(1, 20)]
