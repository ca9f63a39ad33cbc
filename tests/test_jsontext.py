"""``mailgate.jsontext`` (orjson) against the stdlib encoding the store used before: the same
bytes for what envelopes hold, the stdlib's answer where orjson refuses a value, and payloads
that are always valid UTF-8."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailgate import jsontext


def stdlib(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)  # no lone surrogates
leaves = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | text
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(value=values)
@example(value={"text": 'line\nbreak\ttab\x00nul \u2028 \u00e9 \U0001f600 "q" \\ /'})
@example(value={"from": {"email": "pat@example.org", "name": "Pät"}, "to": [], "n": 0})
def test_same_text_as_the_stdlib(value: Any) -> None:
    assert jsontext.dumps(value) == stdlib(value)
    assert jsontext.dumps_utf8(value) == stdlib(value).encode("utf-8")
    assert jsontext.loads(jsontext.dumps(value)) == value


@given(value=st.floats(allow_nan=False, allow_infinity=False))
def test_floats_are_the_same_numbers(value: float) -> None:
    assert jsontext.loads(jsontext.dumps({"score": value})) == json.loads(stdlib({"score": value}))


def test_what_orjson_refuses_falls_back_to_the_stdlib() -> None:
    lone = {"text": "broken \udcff charset"}  # surrogateescape'd byte
    assert jsontext.dumps(lone) == stdlib(lone)
    big = {"n": 2**70}
    assert jsontext.dumps(big) == stdlib(big)
    odd = {1: "int key", "when": {1, 2}}
    assert jsontext.dumps(odd) == stdlib(odd)
    # a stored text with a lone surrogate parses (orjson refuses such a str)
    assert jsontext.loads(stdlib(lone)) == lone


def test_payload_bytes_are_always_valid_utf8() -> None:
    lone = {"text": "broken \udcff charset", "name": "Pät"}
    body = jsontext.dumps_utf8(lone)
    body.decode("utf-8")  # strict: raises on invalid UTF-8
    assert json.loads(body) == lone
    assert jsontext.dumps_utf8({"name": "Pät"}) == '{"name":"Pät"}'.encode()


def test_errors_are_the_stdlib_error_type() -> None:
    for bad in ("{", "[1,]", "nan", ""):
        try:
            jsontext.loads(bad)
        except json.JSONDecodeError:
            continue
        raise AssertionError(f"{bad!r} parsed")
