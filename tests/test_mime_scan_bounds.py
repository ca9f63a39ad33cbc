"""The body scans of replyText and inline forwards look only near rare characters; they must
find exactly what the whole-text scans find, and do work that follows those characters, not
the body's size."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.mime import forwards as F
from mailgate.mime import text as T

LINES = [
    "Hello there, thanks for the quick answer.",
    "On Mon, 1 Dec 2026 at 10:00, Bob <b@x.org> wrote:",
    "On Tue, Jan 5, 2016 at 5:00 PM, Joe",
    "<joe@example.com> wrote:",
    "Joe wrote",  # a key without its colon
    "> quoted line",
    "-----Original Message-----",
    "---------- Forwarded message ----------",
    "Begin forwarded message:",
    "Forwarded message",
    "2014/05/01 a@b.example",
    "2014/05/01",
    "a <b@c.example>",
    "Am 01.12.2026 um 10:00 schrieb Max:",
    "Le 1 déc. 2026, Jean a écrit :",
    "_" * 32,
    "time: 10:00",  # a colon and no key
    "mail me at someone@example.org",
    "the original plan, forwarded later",
    "İstanbul office",
    "",
]


def _both(lines: list[str]) -> tuple[int | None, int | None]:
    text = "\n".join(lines)
    fast = T._quote_position(lines, T._key_lines(lines))
    full = T._quote_position(lines, T._key_lines_full(lines, text))
    return fast, full


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(LINES), max_size=30))
def test_anchored_key_lines_find_the_same_intro(lines: list[str]) -> None:
    fast, full = _both(lines)
    assert fast == full


def test_colon_heavy_body_falls_back_and_agrees() -> None:
    rng = random.Random(7)
    for _ in range(20):
        lines = [f"key{i}: value {i}" for i in range(T.ANCHOR_LINES + 10)]
        for _ in range(5):
            lines.insert(rng.randrange(len(lines)), rng.choice(LINES))
        fast, full = _both(lines)
        assert fast == full
        assert T.lines_with("\n".join(lines), ":@") is None  # the fallback path was taken


def test_intro_late_in_the_searched_lines_is_found_and_after_them_is_not() -> None:
    tail = "\n".join("> old text" for _ in range(50_000))  # a large quoted history
    intro = "On Mon, 1 Dec 2026 at 10:00, Support <s@example.test> wrote:"
    new = [f"line {i}: what the customer wrote" for i in range(T._QUOTE_LIMIT - 1)]
    text = "\n".join([*new, intro, tail])
    assert T.reply_text(text) == "\n".join(new)
    late = "\n".join([*new, "one more line", intro, tail])  # intro past the searched lines
    assert T._split_quote(late) == [(True, late)]


def test_key_lines_test_only_lines_near_rare_characters(monkeypatch: pytest.MonkeyPatch) -> None:
    tested: list[str] = []
    real = T._has_key

    def counting(line: str) -> bool:
        tested.append(line)
        return real(line)

    monkeypatch.setattr(T, "_has_key", counting)
    prose = [
        f"{i} Hello, the original order arrived damaged and was forwarded" for i in range(5000)
    ]
    assert T._key_lines(prose) == []
    assert tested == []  # keys everywhere, but no line where an intro could match
    prose[2500] = "On Mon, 1 Dec 2026 Bob wrote:"
    assert T._key_lines(prose) == [2499, 2500, 2501]
    assert len(tested) == 3  # the colon's line and its neighbours, whatever the body's size


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="\r\na", max_size=40))
def test_newlines_normalized_as_two_replaces(text: str) -> None:
    assert T.normalize_newlines(text) == text.replace("\r\n", "\n").replace("\r", "\n")


SENT_LINES = ["Sent: x", "*Sent:* y", "From: a", "Datum: z", "re:sent:", "a:b", "Gesendet:", "x"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(SENT_LINES), max_size=30), st.integers(0, 600))
def test_first_sent_word_is_the_first_of_the_finds(lines: list[str], colons: int) -> None:
    text = "\n".join([":" * colons, *lines])  # many colons first: the fallback is taken
    finds = [i for i in (text.find(w + ":") for w in T._OUTLOOK_SENT) if i >= 0]
    assert T._first_sent_word(text) == (min(finds) if finds else -1)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "Begin forwarded message:",
                "BEGIN FORWARDED MESSAGE :",
                "Begin forwarded message",
                "Début du message transféré:",
                "a: b",
                "hello",
                "",
            ]
        ),
        max_size=12,
    ),
    st.integers(0, 300),
)
def test_apple_marker_gate_never_hides_a_marker(lines: list[str], noise: int) -> None:
    text = "\n".join([*lines, *("k: v" for _ in range(noise))])
    if F._APPLE.search(text):
        assert F._apple_words(text)
    found = [(s, e) for s, e, style in F._markers(text, False) if style == "apple"]
    assert found == [(m.start(), m.end()) for m in F._APPLE.finditer(text)]


@pytest.mark.parametrize("sep", [":", " -"])  # colon-heavy (whole-text scan) or not
def test_forward_marker_late_in_a_long_body_is_found(sep: str) -> None:
    body = "\n".join(f"note {i}{sep} nothing forwarded here" for i in range(3000))
    text = body + "\n\nBegin forwarded message:\n\nFrom: Ann <ann@example.org>\nSubject: Hi\n\nold"
    found = F.inline_forwards(text)
    assert [f["from"]["email"] for f in found] == ["ann@example.org"]
    assert found[0]["style"] == "apple"
