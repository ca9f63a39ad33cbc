"""Property test: mutated corpus messages never make parse_message raise and always give a
schema-valid, JSON-serializable envelope."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailgate.mime.parse import parse_message
from tests.support.mime import FIXTURES, assert_valid_envelope
from tests.support.mime_oracle import CORPUS, manifest

MAX_SEED_BYTES = 30_000


def _seeds() -> list[bytes]:
    seeds = [p.read_bytes() for p in sorted(FIXTURES.glob("*.eml"))]
    for path in manifest():
        data = (CORPUS / path).read_bytes()
        if len(data) <= MAX_SEED_BYTES:
            seeds.append(data)
    return seeds


SEEDS = _seeds()
_BOUNDARY = re.compile(rb"^--[^\r\n]*\r?\n", re.MULTILINE)


def truncate(raw: bytes, at: float) -> bytes:
    return raw[: int(len(raw) * at)]


def flip(raw: bytes, at: float, value: int) -> bytes:
    if not raw:
        return raw
    i = min(int(len(raw) * at), len(raw) - 1)
    return raw[:i] + bytes([value]) + raw[i + 1 :]


def drop_boundaries(raw: bytes, at: float) -> bytes:
    lines = list(_BOUNDARY.finditer(raw))
    if not lines:
        return raw
    m = lines[min(int(len(lines) * at), len(lines) - 1)]
    return raw[: m.start()] + raw[m.end() :]


def duplicate_headers(raw: bytes, at: float) -> bytes:
    end = raw.find(b"\n\n")
    end = raw.find(b"\r\n\r\n") if end < 0 else end
    if end <= 0:
        return raw
    block = raw[:end]
    cut = int(len(block) * at)
    return block + b"\r\n" + block[cut:] + raw[end:]


def insert_junk(raw: bytes, at: float, junk: bytes) -> bytes:
    i = int(len(raw) * at)
    return raw[:i] + junk + raw[i:]


JUNK = [
    b"=?utf-8?B?",
    b"\r\n--",
    b"\xff\xfe\x00",
    b"\r\n\r\n",
    b"=?x?Q?=E9?=",
    b'"',
    b"<",
    b"(",
    b"\x80\xc3",
    b"Content-Type: multipart/mixed; boundary=x\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
]
MUTATION = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(0, 255)),
    st.tuples(st.just("drop_boundaries"), st.floats(0, 1)),
    st.tuples(st.just("duplicate_headers"), st.floats(0, 1)),
    st.tuples(
        st.just("insert_junk"),
        st.floats(0, 1),
        st.sampled_from(JUNK),
    ),
)


def mutate(raw: bytes, ops: list[tuple[object, ...]]) -> bytes:
    for op in ops:
        name, *args = op
        raw = {
            "truncate": truncate,
            "flip": flip,
            "drop_boundaries": drop_boundaries,
            "duplicate_headers": duplicate_headers,
            "insert_junk": insert_junk,
        }[str(name)](raw, *args)  # type: ignore[operator]
    return raw


@settings(
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(seed=st.sampled_from(SEEDS), ops=st.lists(MUTATION, min_size=1, max_size=4))
def test_mutated_messages_give_valid_envelopes(seed: bytes, ops: list[tuple[object, ...]]) -> None:
    env = parse_message(mutate(seed, ops))
    assert_valid_envelope(env)
    assert not any(e["code"] == "parse.internal" for e in env["parseErrors"]), env["parseErrors"]
