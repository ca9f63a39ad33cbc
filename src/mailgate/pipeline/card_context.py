"""The card data that sits next to a card number: security code (CVV/CVC) and expiry date.

A masked card number (``**** **** **** 1111``) protects little when the next words are
``CVV 123, exp 12/29``. These are found only near a card number the Luhn check accepted
(``WINDOW`` characters either side; an unlabelled ``MM/YY`` only after it), so a "code 123" or
a date elsewhere in a message is left alone. Their digits are masked in full.
"""

from __future__ import annotations

import re

WINDOW = 60
BARE_WINDOW = 16  # an unlabelled date (and a code after it) only right after the number
# labelled security code: CVV, CVV2, CVC, CVC2, CSC, CID, "security code", German/French names
_CVV = re.compile(
    r"(?i)\b(?:cvv2?|cvc2?|csc|cid|security\s+code|card\s+code|prüfnummer|prufnummer"
    r"|kartenprüfnummer|cryptogramme)\b\s*(?:code|no\.?|number)?\s*[:#=]?\s*(\d{3,4})\b"
)
# labelled expiry: "exp 12/29", "expiry: 12-2029", "valid thru 01/27", "gültig bis 03/28"
_EXP_LABELLED = re.compile(
    r"(?i)\b(?:exp(?:iry|iration|ires)?(?:\s+date)?|valid\s+(?:thru|through|until)"
    r"|gültig\s+bis|ablauf(?:datum)?|date\s+d'expiration)\.?\s*[:#=]?\s*"
    r"((?:0[1-9]|1[0-2])\s?[/-]\s?(?:\d{4}|\d{2}))\b"
)
# an unlabelled MM/YY or MM/YYYY right after the number, maybe followed by a bare code
_EXP_BARE = re.compile(
    r"[\s,;:]*((?:0[1-9]|1[0-2])\s?/\s?(?:\d{4}|\d{2}))\b(?:[\s,;]{1,3}(\d{3,4})\b)?"
)


def companion_spans(text: str, cards: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(start, end) of security codes and expiry dates near the card spans ``cards``."""
    found: set[tuple[int, int]] = set()
    for a, b in cards:
        lo, hi = max(0, a - WINDOW), min(len(text), b + WINDOW)
        for rx in (_CVV, _EXP_LABELLED):
            for m in rx.finditer(text, lo, hi):
                found.add((m.start(1), m.end(1)))
        bare = _EXP_BARE.match(text, b, min(len(text), b + BARE_WINDOW + 8))
        if bare is not None:
            found.add((bare.start(1), bare.end(1)))
            if bare.group(2):
                found.add((bare.start(2), bare.end(2)))
    cards_set = set(cards)
    out: list[tuple[int, int]] = []
    for s in sorted(found):
        if s in cards_set or any(a < s[1] and s[0] < b for a, b in cards):
            continue  # inside the card number itself
        if out and s[0] < out[-1][1]:
            continue
        out.append(s)
    return out
