"""Addresses and subjects at rest (issue 15): the sealed message and reply columns, the keyed
hashes the thread index and the reply limits keep instead of addresses, and rows written before
a key was configured still matching."""

from __future__ import annotations

import dataclasses
import json
import secrets
import sqlite3
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.envelope import new_id
from mailgate.store.base import SpoolRecord
from mailgate.store.crypto import NULL_CODEC, AesGcmCodec, IntegrityError
from mailgate.store.pipeline import DedupIntent, ThreadIntent, ThreadRef
from mailgate.store.replies import ReplyAttempt, ReplyIntent, reply_id_for, stored_columns
from mailgate.store.sqlite_backup import check
from mailgate.store.sqlite_base import apply_intents
from mailgate.store.sqlite_crypto import index_intents, sealed_subject
from mailgate.store.sqlite_governance import PAGE, SqliteGovernance
from tests.support.delivery import envelope_for, open_store, publish

CODEC = AesGcmCodec({1: secrets.token_bytes(32)}, 1)


def _framing() -> str:
    """The part every sealed text starts with (the ``mge1:`` tag and the base64 of the format
    header): a value that is a piece of it is found there whatever the key."""
    a, b = CODEC.seal_text("x", "a"), CODEC.seal_text("x", "b")
    n = 0
    while a[n] == b[n]:
        n += 1
    tag = len("mge1:")
    return a[: n - (n - tag) % 4]  # whole base64 quanta only: the next mix in random bytes


FRAMING = _framing()


@settings(max_examples=100, deadline=None)
@given(value=st.text())
def test_text_columns_round_trip_and_hide_the_value(value: str) -> None:
    sealed = CODEC.seal_text("msg_1:mail_from", value)
    assert sealed.startswith("mge1:")
    assert CODEC.open_text("msg_1:mail_from", sealed) == value
    if len(value) > 3 and value not in FRAMING:
        assert value not in sealed[len(FRAMING) :]


def test_text_columns_are_bound_to_row_and_column() -> None:
    sealed = CODEC.seal_text("msg_1:mail_from", "pat@example.org")
    for where in ("msg_2:mail_from", "msg_1:subject"):
        with pytest.raises(IntegrityError):
            CODEC.open_text(where, sealed)
    with pytest.raises(IntegrityError):
        CODEC.open_text("msg_1:mail_from", sealed[:-6] + "AAAAAA")
    with pytest.raises(IntegrityError):
        CODEC.open_text("msg_1:mail_from", "mge1:not base64!")
    # written before a key was configured: read as it is
    assert CODEC.open_text("msg_1:mail_from", "pat@example.org") == "pat@example.org"
    assert NULL_CODEC.seal_text("msg_1:mail_from", "pat@example.org") == "pat@example.org"


def test_open_columns_opens_only_the_sealed_ones() -> None:
    row = {
        "id": "msg_1",
        "mail_from": CODEC.seal_text("msg_1:mail_from", "pat@example.org"),
        "rcpt_to": '["support@example.test"]',  # plain: written before the key
        "subject": CODEC.seal_text("msg_1:subject", "Refund"),
        "state": "processed",
    }
    opened = CODEC.open_columns("msg_1", row)
    assert opened["mail_from"] == "pat@example.org"
    assert opened["rcpt_to"] == '["support@example.test"]'
    assert opened["subject"] == "Refund"
    assert opened["state"] == "processed"
    assert NULL_CODEC.open_columns("msg_1", row) is row


def thread_intent(**kw: object) -> ThreadIntent:
    base: dict[str, object] = {
        "tenant": "default",
        "thread_id": "thr_1",
        "ticket": None,
        "is_new": True,
        "message_id": "<a@example.org>",
        "sender": "pat@example.org",
        "participants": ("pat@example.org", "sam@example.org"),
        "subject": "Refund",
    }
    base.update(kw)
    return ThreadIntent(**base)  # type: ignore[arg-type]


def test_thread_addresses_become_keyed_hashes_and_still_admit_their_people() -> None:
    (indexed,) = index_intents(CODEC, [thread_intent()])
    assert isinstance(indexed, ThreadIntent)
    assert indexed.sender == CODEC.index("pat@example.org")
    assert set(indexed.participants) == {
        CODEC.index("pat@example.org"),
        CODEC.index("sam@example.org"),
    }
    assert "Refund" not in (indexed.subject or "")
    assert CODEC.open_text("thr_1:subject", indexed.subject or "") == "Refund"
    assert indexed.message_id == CODEC.index("a@example.org")
    ref = ThreadRef(
        "thr_1",
        None,
        indexed.sender,
        frozenset(indexed.participants),
        index=CODEC.index,
    )
    assert ref.admits("pat@example.org") and ref.admits("sam@example.org")
    assert not ref.admits("mallory@example.org")
    assert not ref.admits("")
    # a thread stored before the key: plain addresses, still matched
    old = ThreadRef(
        "thr_0", None, "pat@example.org", frozenset({"sam@example.org"}), index=CODEC.index
    )
    assert old.admits("pat@example.org") and old.admits("sam@example.org")
    assert not old.admits("mallory@example.org")
    # without a key nothing changes
    assert index_intents(NULL_CODEC, [thread_intent()]) == [thread_intent()]


def test_other_intents_are_left_alone_or_hashed() -> None:
    dedup = DedupIntent(tenant="default", key="k1", seen_at=1.0, window=10.0)
    (indexed,) = index_intents(CODEC, [dedup])
    assert isinstance(indexed, DedupIntent) and indexed.key == CODEC.index("k1")


def reply_intent() -> ReplyIntent:
    return ReplyIntent(
        reply_id="rpl_1",
        tenant="default",
        recipient="Pat@Example.org",
        mail_from="",
        draft='{"to": "Pat@Example.org"}',
        message_id="<r@example.test>",
        template="ack",
        subject="Re: Refund",
    )


def test_reply_columns_sealed_and_limit_keys_hashed() -> None:
    intent = reply_intent()
    plain = stored_columns(intent)
    assert plain["recipient_key"] == "pat@example.org"
    assert plain["recipient_domain"] == "example.org"
    (sealed,) = index_intents(CODEC, [intent])
    assert isinstance(sealed, ReplyIntent)
    cols = stored_columns(sealed)
    assert sealed.recipient == intent.recipient  # the intent itself stays plain (the envelope)
    for name in ("recipient", "mail_from", "subject", "draft"):
        assert cols[name].startswith("mge1:")
        assert CODEC.open_text(f"rpl_1:{name}", cols[name]) == plain[name]
    # the limits count hashes: equal for the same return path whatever its case
    assert cols["recipient_key"] == CODEC.index("pat@example.org")
    assert cols["recipient_domain"] == CODEC.index("example.org")
    assert "example.org" not in "".join(cols.values())


def test_sealed_subject() -> None:
    assert sealed_subject(NULL_CODEC, "msg_1", {"subject": "Refund"}) == "Refund"
    assert sealed_subject(CODEC, "msg_1", {}) is None
    stored = sealed_subject(CODEC, "msg_1", {"subject": "Refund"})
    assert stored is not None and CODEC.open_text("msg_1:subject", stored) == "Refund"


async def test_encrypted_store_seals_envelope_outside_its_json_and_buries_a_tampered_one(
    tmp_path: Path,
) -> None:
    async with open_store(tmp_path) as store:
        store.codec = CODEC
        good = await publish(store, thread="thr_A")
        bad = await publish(store, thread="thr_B")
        row = await store._read_one("SELECT envelope, sealed FROM messages WHERE id = ?", (good,))
        assert row is not None and row["sealed"] is not None
        assert "alice@example.com" not in row["envelope"] and "Hi there" not in row["envelope"]
        assert b"alice@example.com" not in row["sealed"]
        opened = await store.get_envelope(good)
        assert opened["from"]["email"] == "alice@example.com" and opened["text"].startswith("Hi")

        def tamper(conn: sqlite3.Connection) -> None:
            (sealed,) = conn.execute("SELECT sealed FROM messages WHERE id = ?", (bad,)).fetchone()
            flipped = bytearray(sealed)
            flipped[-2] ^= 1
            conn.execute("UPDATE messages SET sealed = ? WHERE id = ?", (bytes(flipped), bad))

        await store._write(tamper)
        items = await store.claim_outbox("hook", 10, owner="w1", lease=30)
        assert [i.msg_id for i in items] == [good]  # the other delivery is not held back
        assert json.loads(items[0].envelope_json)["from"]["email"] == "alice@example.com"
        dead = await store._read_one(
            "SELECT o.state, o.last_error FROM outbox o JOIN events e ON e.id = o.event_id"
            " WHERE e.msg_id = ?",
            (bad,),
        )
        assert dead is not None and dead["state"] == "dead"
        assert dead["last_error"].startswith("integrity:")
        with pytest.raises(IntegrityError):
            await store.get_envelope(bad)


async def test_erase_in_an_encrypted_store_pages_and_counts_only_real_mentions(
    tmp_path: Path,
) -> None:
    async with open_store(tmp_path) as store:
        store.codec = CODEC
        alice = [await publish(store) for _ in range(PAGE + 5)]  # more than one page
        others = []
        for sender, text in (("bob@other.test", "ask alice@example.com"), ("carol@x.test", "hi")):
            msg_id = new_id("msg")
            raw = f"From: {sender}\r\nTo: support@example.test\r\n\r\n{text}\r\n".encode()
            await store.spool(
                SpoolRecord(
                    id=msg_id,
                    received_at=time.time(),
                    mail_from=sender,
                    rcpt_to=["support@example.test"],
                    client_ip="127.0.0.1",
                    helo="h",
                    tls=False,
                    raw=raw,
                )
            )
            env = {"id": msg_id, "from": {"email": sender, "name": ""}, "text": text}
            await store.complete(msg_id, env, [], state="processed")
            others.append(msg_id)
        report = await SqliteGovernance(store).erase_subject("Alice@Example.com")
        assert report.messages == len(alice)
        assert set(report.message_ids) == set(alice)
        assert report.mentioned_elsewhere == 1  # Bob's message names her in its body
        left = await store._read("SELECT id FROM messages WHERE state != 'notice'")
        assert {r["id"] for r in left} == set(others)


async def test_db_check_reports_a_tampered_envelope_or_address_column(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        store.codec = CODEC
        good, bad_env, bad_col = [await publish(store) for _ in range(3)]

        def tamper(conn: sqlite3.Connection) -> None:
            (sealed,) = conn.execute(
                "SELECT sealed FROM messages WHERE id = ?", (bad_env,)
            ).fetchone()
            flipped = sealed[:-1] + bytes([sealed[-1] ^ 1])  # always differs from the original
            conn.execute("UPDATE messages SET sealed = ? WHERE id = ?", (flipped, bad_env))
            (mail_from,) = conn.execute(
                "SELECT mail_from FROM messages WHERE id = ?", (bad_col,)
            ).fetchone()
            moved = CODEC.seal_text(f"{good}:mail_from", "alice@example.com")  # another row's
            assert mail_from != moved
            conn.execute("UPDATE messages SET mail_from = ? WHERE id = ?", (moved, bad_col))

        await store._write(tamper)
    report = check(tmp_path, CODEC)
    problems = "\n".join(report.problems)
    assert f"{bad_env}: envelope or address columns" in problems
    assert f"{bad_col}: envelope or address columns" in problems
    assert good not in problems
    assert check(tmp_path, CODEC).messages == 3


async def test_a_reply_and_its_errors_are_sealed_and_read_back(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        store.codec = CODEC
        msg_id = await publish(store)
        intent = dataclasses.replace(reply_intent(), reply_id=reply_id_for(msg_id))
        env = envelope_for(msg_id)
        await store._write(
            lambda conn: apply_intents(conn, msg_id, env, index_intents(CODEC, [intent]))
        )
        (item,) = await store.claim_replies(10, owner="w1", lease=30)
        assert item.recipient == "Pat@Example.org"  # opened for the SMTP worker
        answer = "550 5.1.1 <Pat@Example.org>: Recipient address rejected"
        await store.finish_reply(item, ReplyAttempt("dead", code=550, error=answer), owner="w1")
        record = await store.get_reply(item.id)
        assert record.recipient == "Pat@Example.org" and record.last_error == answer
        assert record.history[0]["error"] == answer
        rows = await store._read(
            "SELECT r.recipient, r.recipient_key, r.last_error, a.error FROM reply_outbox r"
            " JOIN reply_attempts a ON a.reply_id = r.id"
        )
    stored = " ".join(str(v) for v in rows[0])
    assert "example.org" not in stored.lower()


async def test_a_routing_model_is_sealed_its_vocabulary_is_customers_words(tmp_path: Path) -> None:
    data = json.dumps({"vocabulary": ["pat-customer-4111", "refund"], "weights": [0.5, 0.25]})
    async with open_store(tmp_path) as store:
        store.codec = CODEC
        version = await store.save_model("default", data, {"examples": 2})
        assert await store.model_data(version) == data
        assert (await store.get_model(version)).data == data
        (stored,) = (await store._read("SELECT data FROM models"))[0]
    assert "pat-customer-4111" not in stored and stored.startswith("mge1:")
    async with open_store(tmp_path / "plain") as plain:  # without a key: as it was
        version = await plain.save_model("default", data, {})
        assert await plain.model_data(version) == data


async def test_a_reply_suppressed_at_commit_is_sealed_in_the_stored_envelope(
    tmp_path: Path,
) -> None:
    """The reply applier rewrites the envelope's ``reply`` field when a limit suppresses the
    reply; with a key that field is sealed, so the rewrite is sealed too (`apply_sealed`)."""
    async with open_store(tmp_path) as store:
        store.codec = CODEC
        ids = []
        for _ in range(2):
            msg_id = new_id("msg")
            await store.spool(
                SpoolRecord(
                    id=msg_id,
                    received_at=time.time(),
                    mail_from="Pat@Example.org",
                    rcpt_to=["support@example.test"],
                    client_ip="127.0.0.1",
                    helo="h",
                    tls=False,
                    raw=b"From: Pat@Example.org\r\n\r\nhi\r\n",
                )
            )
            intent = dataclasses.replace(
                reply_intent(), reply_id=reply_id_for(msg_id), per_sender_limit=1
            )
            env = envelope_for(msg_id)
            env["reply"] = {"queued": True, "to": "Pat@Example.org", "outboxId": intent.reply_id}
            await store.complete(msg_id, env, [intent])
            ids.append(msg_id)
        first, second = [await store.get_envelope(i) for i in ids]
        assert first["reply"]["queued"] is True
        assert second["reply"]["queued"] is False and second["reply"]["reason"] == "sender-limit"
        assert second["reply"]["to"] == "Pat@Example.org"
        rows = await store._read("SELECT envelope, sealed FROM messages")
    for row in rows:
        assert "example.org" not in row["envelope"].lower()
        assert b"example.org" not in row["sealed"].lower()
