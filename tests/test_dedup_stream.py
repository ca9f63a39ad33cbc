"""The dedup hashes squash and hash the body in pieces; the keys must stay exactly those of the
whole-string formulas the stored keys were made with."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.pipeline.stages import dedup
from mailgate.pipeline.stages.dedup import content_fingerprint, dedup_key, squash, squashed_pieces

PARTS = st.lists(
    st.one_of(st.sampled_from([" ", "\n", "\t", "\u00a0", "  \n ", "\u2003"]), st.text(max_size=6)),
    max_size=40,
)


def old_fingerprint(env: dict[str, Any]) -> str:
    body = squash(env.get("text") or "")
    blobs = sorted(str(a.get("sha256") or "") for a in env.get("attachments") or [])
    material = "\n".join([env["from"]["email"], body, *blobs])
    return hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def old_key(env: dict[str, Any]) -> str:
    body = env.get("text") or ""
    subject = dedup._SUBJECT_PREFIX.sub("", env["subject"])
    material = "\n".join([env["from"]["email"], squash(subject).lower(), squash(body).lower()])
    return "hash:" + hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()


@settings(max_examples=400, deadline=None)
@given(PARTS, st.integers(1, 12))
def test_pieces_join_to_the_squash(parts: list[str], chunk: int) -> None:
    text = "".join(parts)
    assert "".join(squashed_pieces(text, chunk)) == squash(text)


@settings(max_examples=200, deadline=None)
@given(PARTS, st.integers(1, 12), st.lists(st.sampled_from(["ab", "cd", ""]), max_size=3))
def test_streamed_hashes_equal_the_whole_string_formulas(
    parts: list[str], chunk: int, blobs: list[str]
) -> None:
    env = {
        "from": {"email": "jane@example.org"},
        "subject": "Re: Σigma ΣΑΣ order",
        "text": "".join(parts) + " ΟΔΟΣ İstanbul",
        "attachments": [{"sha256": b} for b in blobs],
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dedup, "CHUNK", chunk)
        assert content_fingerprint(env) == old_fingerprint(env)
        assert dedup_key(env) == old_key(env)


def test_a_large_body_is_squashed_a_chunk_at_a_time() -> None:
    body = "word " * 400_000  # 2 MB of prose
    pieces = list(squashed_pieces(body))
    assert len(pieces) == pytest.approx(len(body) / dedup.CHUNK, abs=2)
    assert max(map(len, pieces)) <= dedup.CHUNK + 8  # no whole-body intermediate string
    env = {"from": {"email": "a@b.example"}, "subject": "x", "text": body, "attachments": []}
    assert content_fingerprint(env) == old_fingerprint(env)
