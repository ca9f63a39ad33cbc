"""The encryption codec (issue 15): round trips, ciphertexts bound to their place, data written
before a key stays readable, data keys re-wrapped by rotation, wrong keys refused."""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.store import crypto
from mailgate.store.crypto import AesGcmCodec, EncryptionKeyError, IntegrityError

KEY = secrets.token_bytes(32)
CODEC = AesGcmCodec({1: secrets.token_bytes(32)}, 1)


def compact(env: dict[str, Any]) -> str:
    return json.dumps(env, ensure_ascii=False, separators=(",", ":"))


json_values = st.recursive(
    # integers within 64 bits: orjson reads a longer one as a float (envelopes hold none)
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


@settings(max_examples=150, deadline=None)
@given(
    text=st.text(),
    headers=st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=4),
    extra=json_values,
)
def test_envelope_round_trip_both_ways(text: str, headers: dict[str, str], extra: Any) -> None:
    env = {
        "id": "msg_1",
        "queue": "q",
        "subject": text,
        "from": {"email": "pat@example.org", "name": text},
        "text": text,
        "headers": headers,
        "entities": extra,
    }
    text, sealed = CODEC.seal_envelope("msg_1", env)
    # content and people's addresses are sealed together (one ciphertext, the ``sealed``
    # column); the JSON text keeps the rest (what SQL reads)
    stored = json.loads(text)
    for name in ("subject", "from", "text", "headers", "entities"):
        assert name not in stored or env[name] is None
    assert stored["id"] == "msg_1" and stored["queue"] == "q"
    assert sealed is not None and b"pat@example.org" not in sealed
    assert "pat@example.org" not in text
    assert CODEC.open_envelope("msg_1", text, sealed) == env
    assert json.loads(CODEC.open_envelope_json("msg_1", text, sealed)) == env


def field_sealed(msg_id: str, name: str, value: Any) -> str:
    """An envelope field sealed on its own, as stores before the sealed group wrote it."""
    plain = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    sealed = CODEC._seal(plain, f"env:{msg_id}:{name}".encode())
    return crypto.FIELD_PREFIX + base64.b64encode(sealed).decode("ascii")


def test_ciphertexts_are_bound_to_their_place() -> None:
    raw = CODEC.seal_raw("msg_A", b"Subject: hi\r\n\r\nbody")
    assert CODEC.open_raw("msg_A", raw) == b"Subject: hi\r\n\r\nbody"
    with pytest.raises(IntegrityError):
        CODEC.open_raw("msg_B", raw)  # moved to another row
    flipped = bytearray(raw)
    flipped[-1] ^= 1
    with pytest.raises(IntegrityError):
        CODEC.open_raw("msg_A", bytes(flipped))
    with pytest.raises(IntegrityError):
        CODEC.open_raw("msg_A", raw[:20])  # truncated
    text, sealed = CODEC.seal_envelope("msg_A", {"text": "secret", "queue": "q"})
    assert sealed is not None
    with pytest.raises(IntegrityError):
        CODEC.open_envelope("msg_B", text, sealed)  # another message's sealed fields
    flipped_fields = bytearray(sealed)
    flipped_fields[-3] ^= 1
    with pytest.raises(IntegrityError):
        CODEC.open_envelope_json("msg_A", text, bytes(flipped_fields))
    # one field at a time (how stores before the sealed group wrote envelopes) stays readable,
    # and a field's ciphertext moved to another field does not open
    legacy = {"text": field_sealed("msg_A", "text", "secret"), "queue": "q"}
    assert CODEC.open_envelope("msg_A", compact(legacy)) == {"text": "secret", "queue": "q"}
    assert json.loads(CODEC.open_envelope_json("msg_A", compact(legacy))) == {
        "text": "secret",
        "queue": "q",
    }
    moved = {"html": legacy["text"]}  # the text's ciphertext put in the html field
    with pytest.raises(IntegrityError):
        CODEC.open_envelope("msg_A", compact(moved))
    blob = CODEC.seal_blob("ab" * 32, b"file")
    assert CODEC.open_blob("ab" * 32, blob) == b"file"
    with pytest.raises(IntegrityError):
        CODEC.open_blob("cd" * 32, blob)


def test_plaintext_written_before_a_key_is_read_as_is() -> None:
    assert CODEC.open_raw("msg_1", b"From: a\r\n\r\nold") == b"From: a\r\n\r\nold"
    old = {"text": "old body", "html": None}
    assert CODEC.open_envelope("msg_1", compact(old)) == old
    assert CODEC.open_envelope_json("msg_1", compact(old)) == compact(old)
    assert CODEC.open_envelope_json("msg_1", compact(old), None) == compact(old)


def test_data_keys_file_rotation_and_wrong_keys(tmp_path: Path) -> None:
    k1, k2 = secrets.token_bytes(32), secrets.token_bytes(32)
    codec = crypto.load_codec(tmp_path, k1)
    path = crypto.data_keys_path(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600
    sealed = codec.seal_raw("msg_1", b"raw")
    assert crypto.load_codec(tmp_path, k1).open_raw("msg_1", sealed) == b"raw"  # same data key
    with pytest.raises(EncryptionKeyError):
        crypto.load_codec(tmp_path, k2)
    assert crypto.rotate(tmp_path, k1, k2, new_data_key=True) == 2
    rotated = crypto.load_codec(tmp_path, k2)
    assert rotated.open_raw("msg_1", sealed) == b"raw"  # old data, old data key
    assert rotated.active == 2 and rotated.open_raw("m", rotated.seal_raw("m", b"x")) == b"x"
    # index hashes stay equal across rotation and a new data key: stored ones keep matching
    assert rotated.index("a@b") == codec.index("a@b") != codec.index("a@c")
    assert codec.index("a@b").startswith("h1:") and "a@b" not in codec.index("a@b")
    with pytest.raises(EncryptionKeyError):
        crypto.load_codec(tmp_path, k1)
    assert crypto.kek_id(k2) == json.loads(path.read_text())["kek_id"]


@pytest.mark.parametrize("text", ["", "not base64!", "c2hvcnQ="])
def test_malformed_keys_refused(text: str) -> None:
    with pytest.raises(EncryptionKeyError):
        crypto.parse_kek(text)
    assert len(crypto.parse_kek(crypto.new_kek_text())) == 32


def test_check_config_warns_while_encryption_is_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mailgate.config import Config, StoreConfig, config_warnings

    monkeypatch.delenv(crypto.ENV_KEY, raising=False)
    off = [w for w in config_warnings(Config()) if w.startswith("store.encryption_key_file")]
    assert len(off) == 1 and "unencrypted" in off[0]
    key = tmp_path / "kek"
    key.write_text(crypto.new_kek_text() + "\n")
    on = Config(store=StoreConfig(data_dir=str(tmp_path / "data"), encryption_key_file=str(key)))
    assert not [w for w in config_warnings(on) if w.startswith("store.encryption_key_file")]
    assert crypto.codec_for(on).enabled and not crypto.codec_for(Config(), env={}).enabled
    monkeypatch.setenv(crypto.ENV_KEY, crypto.new_kek_text())
    assert not [w for w in config_warnings(Config()) if w.startswith("store.encryption")]


TRICKY = ['","', '"}', '"replyText":[1,2],', "\\", '\\"', '"', "x\\\\", "\u2028", "\x00\x1f"]


@settings(max_examples=200, deadline=None)
@given(
    lead=st.text(alphabet=" \t\r\n\x0b\x0c\u3000", max_size=4),
    reply=st.lists(st.text(max_size=40) | st.sampled_from(TRICKY), min_size=1, max_size=30),
    tail=st.text(max_size=20) | st.sampled_from(TRICKY),
    same=st.sampled_from(["part", "other", "none"]),
    extra=json_values,
)
def test_reply_text_inside_text_is_stored_once(
    lead: str, reply: list[str], tail: str, same: str, extra: Any
) -> None:
    """When replyText is what reply_text keeps of an unquoted or top-posted text, the stored
    JSON carries it once, as offsets into the text, and both codecs give back the same
    envelope, whatever the texts hold (quotes, backslashes, escapes, the marker's own spelling)."""
    reply_text = ("R" + "".join(reply)).ljust(13, ".") * 40  # past the folding threshold
    text = lead + reply_text + tail
    env = {
        "id": "msg_1",
        "text": text,
        "replyText": {"part": reply_text, "other": reply_text + "!", "none": None}[same],
        "reply": {"text": text, "replyText": [0, 1]},  # nested look-alikes are left alone
        "entities": extra,
    }
    folded = crypto.fold_reply(env)
    plain, none = crypto.NULL_CODEC.seal_envelope("msg_1", env)
    assert none is None
    if same == "part":
        assert isinstance(folded["replyText"], list) and list(folded)[:2] == ["replyText", "text"]
        assert len(plain) < len(compact(env)) - len(compact(reply_text)) + 20
    else:
        assert folded is env
    assert json.loads(crypto.NULL_CODEC.open_envelope_json("msg_1", plain)) == env
    # a store that had no key yet, read after one is configured
    assert CODEC.open_envelope("msg_1", plain) == env
    sealed_text, sealed = CODEC.seal_envelope("msg_1", env)
    assert json.loads(CODEC.open_envelope_json("msg_1", sealed_text, sealed)) == env


def test_folded_envelope_survives_sqlite_json_set() -> None:
    """The store updates ``$.reply`` with SQLite's json_set (sqlite_replies): the folded form's
    head is untouched, so the text still unfolds."""
    import sqlite3

    text = 'a "b" \\' * 200
    env = {"text": "\n" + text + "\n-- \nPat", "replyText": text, "reply": None, "id": "m"}
    stored, _ = crypto.NULL_CODEC.seal_envelope("m", env)
    conn = sqlite3.connect(":memory:")
    for path, value in (("$.reply", '{"text":"x"}'), ("$.added", "[1]")):
        (stored,) = conn.execute("SELECT json_set(?, ?, json(?))", (stored, path, value)).fetchone()
    out = json.loads(crypto.NULL_CODEC.open_envelope_json("m", stored))
    assert out == {**env, "reply": {"text": "x"}, "added": [1]}
