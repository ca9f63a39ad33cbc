"""Entity values are capped per entity (the first MAX_VALUES distinct ones, in order), while
masking still covers every card number in the text."""

from __future__ import annotations

from mailgate.config import Config
from mailgate.pipeline.entities import MAX_VALUES, build_entities, extract, luhn_valid, mask


def card(n: int) -> str:
    """A Luhn-valid 16-digit number derived from n."""
    base = f"4111{n:011d}"
    for check in "0123456789":
        if luhn_valid(base + check):
            return base + check
    raise AssertionError("no check digit")


def test_values_are_capped_in_order_of_appearance() -> None:
    patterns = build_entities(Config().pipeline)
    text = "\n".join(f"my order 9{n:05d} is late" for n in range(3 * MAX_VALUES))
    found = extract({"subject": "", "text": text}, patterns)
    assert found["orderId"] == [f"9{n:05d}" for n in range(MAX_VALUES)]


def test_repeats_do_not_count_against_the_cap() -> None:
    patterns = build_entities(Config().pipeline)
    text = "order 123456 " * 500 + " order 654321"
    found = extract({"subject": "", "text": text}, patterns)
    assert found["orderId"] == ["123456", "654321"]


def test_every_card_is_masked_even_past_the_cap() -> None:
    patterns = build_entities(Config().pipeline)
    cards = [card(n) for n in range(MAX_VALUES + 50)]
    env = {"subject": "", "text": "\n".join(f"card {c} please" for c in cards)}
    found = extract(env, patterns)
    assert len(found["cardNumber"]) == MAX_VALUES
    assert mask(env, patterns) == len(cards)
    assert not any(c in env["text"] for c in cards)
    assert not any(c[:12] in env["text"] for c in cards)


def test_mask_reuses_extract_spans_only_for_the_same_text() -> None:
    patterns = build_entities(Config().pipeline)
    cards = [card(n) for n in range(3)]
    env = {"subject": "", "text": " and ".join(cards)}
    spans: dict[tuple[str, str], tuple[str, list[tuple[int, int]]]] = {}
    extract(env, patterns, {}, spans)
    assert spans[("cardNumber", "text")][0] is env["text"]
    assert mask(env, patterns, spans) == 3 and not any(c in env["text"] for c in cards)
    # The cache now names the old text; a changed field is scanned afresh, not masked by it.
    other = {"subject": "", "text": "x " + cards[0]}
    assert mask(other, patterns, spans) == 1 and cards[0] not in other["text"]
