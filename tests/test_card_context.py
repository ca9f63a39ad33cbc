"""Card masking also covers the security code and expiry next to a card number (issue 15),
and leaves codes and dates elsewhere in the message alone."""

from __future__ import annotations

import pytest

from mailgate.pipeline.card_context import companion_spans
from mailgate.pipeline.entities import luhn_spans
from mailgate.pipeline.offline import MemoryPorts
from mailgate.pipeline.runner import PipelineRunner
from tests.support.pipeline import make_config, make_env


def near(text: str) -> list[str]:
    return [text[a:b] for a, b in companion_spans(text, luhn_spans(text))]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Card 4111 1111 1111 1111, CVV 123, exp 12/29.", ["123", "12/29"]),
        ("4111111111111111 12/29 123 thanks", ["12/29", "123"]),
        ("cvc: 4321 for card 4111-1111-1111-1111", ["4321"]),
        ("Karte 4111 1111 1111 1111 gültig bis 03/28, Prüfnummer 987", ["03/28", "987"]),
        ("4111 1111 1111 1111 valid thru 01/2027 security code 0042", ["01/2027", "0042"]),
        # not next to a card: a date and a code elsewhere stay
        ("4111111111111111, see invoice 10/2024 please", []),
        ("Order 12/03 code 999, no card here", []),
        ("CVV 123 but 4111 1111 1111 1112 fails Luhn", []),
    ],
)
def test_companions_found_only_next_to_a_card(text: str, expected: list[str]) -> None:
    spans = luhn_spans(text)
    found = near(text) if spans else []
    assert found == expected


async def test_pipeline_masks_cvv_and_expiry_in_every_text_field() -> None:
    runner = PipelineRunner(make_config(), MemoryPorts())
    body = "Refund to 5555 5555 5555 4444, CVV 737, expiry 11/28. Order 12/03 arrived."
    env = make_env(text=body)
    env["html"] = f"<p>{body}</p>"
    await runner.process(env)
    for f in ("text", "replyText", "html"):
        assert "**** **** **** 4444" in env[f]
        assert "CVV ***" in env[f] and "expiry **/**" in env[f]
        assert "737" not in env[f] and "11/28" not in env[f]
        assert "Order 12/03 arrived" in env[f]  # a date away from the card is kept
    assert env["entities"]["cardNumber"] == ["**** **** **** 4444"]
