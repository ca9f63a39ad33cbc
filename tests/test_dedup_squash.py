"""The dedup keys' whitespace normalisation must stay exactly what the stored keys were made
with (``re.sub(r"\\s+", " ", text).strip()``), whatever the body holds."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.pipeline.stages.dedup import squash

WS = re.compile(r"\s+")
SPACES = [chr(c) for c in range(0x3001) if chr(c).isspace()] + ["\u3000", "\ufeff", "\u200b"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(SPACES), st.text(max_size=5)), max_size=40))
def test_squash_is_the_regex_normalisation(parts: list[str]) -> None:
    text = "".join(parts)
    assert squash(text) == WS.sub(" ", text).strip()


def test_squash_examples() -> None:
    assert squash("  a \t\r\n b\u00a0\u2003c  ") == "a b c"
    assert squash("") == ""
    assert squash(" \n ") == ""
