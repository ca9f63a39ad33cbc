"""replyText's bounded quote search finds the same intro line as quotequail's full scan."""

from __future__ import annotations

import random

import quotequail

from mailgate.config import Config
from mailgate.mime import text as T
from mailgate.pipeline.entities import MAX_VALUES, build_entities, extract

PIECES = [
    "Hello there, thanks for the quick answer.",
    "On Mon, 1 Dec 2026 at 10:00, Bob <b@x.org> wrote:",
    "> quoted line",
    "> > deeper quote",
    "-----Original Message-----",
    "From: Bob Smith\nSent: Monday, December 1, 2026 10:00 AM",
    "Begin forwarded message:",
    "",
    "the original idea was different",
    "On Tue, Jan 5, 2016 at 5:00 PM, Joe",
    "<joe@example.com> wrote:",
    "2014/05/01 a@b.example",
    "---------- Forwarded message ----------",
    "Am 01.12.2026 um 10:00 schrieb Max Mustermann:",
    "Le 1 déc. 2026, Jean a écrit :",
    "-- ",
    "Jane | ACME",
    "_" * 32,
    "İstanbul office, forwarded to the team",
]


def full_scan(text: str) -> list[tuple[bool, str]]:
    """What reply_text did before: quotequail over the first lines, every line tested."""
    lines = text.split("\n")
    head = "\n".join(lines[: T._QUOTE_LIMIT])
    result: list[tuple[bool, str]] = quotequail.quote(
        head, limit=len(lines) + 1, quote_intro_line=True
    )
    return result


def test_bounded_split_equals_quotequail_full_scan() -> None:
    rng = random.Random(16)
    split = 0
    for _ in range(600):
        text = "\n".join(rng.choice(PIECES) for _ in range(rng.randint(1, 25)))
        want = full_scan(text)
        got = T._split_quote(text)
        if len(want) > 1:
            split += 1
            assert got == want, text
        else:
            assert len(got) == 1, text
    assert split > 100  # the generator does produce quoted replies


def test_intro_deep_in_a_long_body_is_found() -> None:
    new = "\n".join(f"line {i} of what the customer wrote" for i in range(800))
    text = new + "\nOn Mon, 1 Dec 2026 at 10:00, Support <s@example.test> wrote:\n> old text\n"
    assert T.reply_text(text) == new.strip()
    assert T._split_quote(text) == full_scan(text)


def test_entities_keep_first_seen_order_without_repeats() -> None:
    patterns = build_entities(Config().pipeline)
    body = " ".join(f"PO-{n} and PO-{n % 7}00" for n in range(1000, 1400))
    found = extract({"subject": "PO-1000", "text": body}, patterns)
    po = found["poNumber"]
    assert po[:3] == ["PO-1000", "PO-600", "PO-1001"]
    # 407 distinct values in the text; the first MAX_VALUES kept, in order, none twice
    expected: list[str] = []
    for n in range(1000, 1400):
        for value in (f"PO-{n}", f"PO-{n % 7}00"):
            if value not in expected:
                expected.append(value)
    assert len(expected) == 407
    assert po == expected[:MAX_VALUES]


def test_separator_and_outlook_scans_equal_their_regexes() -> None:
    rng = random.Random(3676)
    lines = [*PIECES, "--", "-- x", "---", "*From:* Bob", "*Sent:* Monday", "Sent: x",
             "  From: a b", "Date: today", "Von: Max", "Gesendet: Montag", "To: y"]  # fmt: skip
    for _ in range(1500):
        text = "\n".join(rng.choice(lines) for _ in range(rng.randint(0, 20)))
        if rng.random() < 0.3:
            text += "\n"
        seps = list(T._SIG_SEPARATOR.finditer(text))
        assert T._last_separator(text) == (seps[-1].start() if seps else -1), text
        header = T._OUTLOOK_HEADER.search(text)
        assert T._outlook_header(text) == (header.start() if header else -1), text
