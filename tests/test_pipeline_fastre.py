"""The fast case-insensitive search must find exactly what ``re`` finds."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.pipeline.entities import build_entities
from mailgate.pipeline.fastre import CiPattern, lower_pattern, strip_leading_assertion
from tests.support.pipeline import make_config

PATTERNS = [
    (r"invoice|refund", re.I),
    (r"\border\s*#?\s*(\d{4,})\b", re.I),
    (r"\bPO-\d{3,}\b", 0),
    (r"(?<![A-Za-z0-9])T-\d+\b", 0),
    (r"(?<=\s)ab+c", re.I),
    (r"^re:\s*\[?T-\d+", re.I | re.M),
    (r"(?P<value>[a-z]{2,5}-)?\d[\d-]{1,6}\d", re.I),
    (r"\BAB", re.I),
    (r"[A-Z]{2}\d", re.I),
]

ALPHABET = "abcABC T-0123456789#PORDERorderİßé\n-"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=80))
def test_same_matches_as_re(text: str) -> None:
    for pattern, flags in PATTERNS:
        fast = CiPattern.compile(pattern, flags)
        slow = re.compile(pattern, flags)
        assert [m.span() for m in fast.finditer(text)] == [m.span() for m in slow.finditer(text)], (
            pattern
        )
        a, b = fast.search(text), slow.search(text)
        assert (a and a.span()) == (b and b.span()), pattern


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="order #PO-T1234567890 invoice INV-4111 1111 1111 1111x\n", max_size=120))
def test_default_entities_equal_slow_path(text: str) -> None:
    for p in build_entities(make_config().pipeline):
        slow = [m.span() for m in p.regex.original.finditer(text)]
        fast = [m.span() for m in p.regex.finditer(text)]
        assert fast == slow, p.name


def test_helpers() -> None:
    assert lower_pattern(r"Invoice\D+\S") == r"invoice\D+\S"
    assert lower_pattern(r"(?P<Value>X)(?P=Value)") == r"(?P<Value>x)(?P=Value)"
    assert lower_pattern(r"[A-z]") is None
    assert lower_pattern(r"\N{BULLET}") is None
    assert strip_leading_assertion(r"\bfoo") == "foo"
    assert strip_leading_assertion(r"(?<![(\]])foo") == "foo"
    assert strip_leading_assertion(r"foo\b") is None
