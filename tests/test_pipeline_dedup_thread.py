"""Dedup (window, multi-inbox CC, hash fallback, races) and threading (headers, alias, token)."""

from __future__ import annotations

import time

import pytest

from mailgate.pipeline.runner import PipelineRunner
from mailgate.store.delivery import PublishIntent
from mailgate.store.pipeline import DedupConflict
from mailgate.store.sqlite import SqliteStore
from tests.support.pipeline import ingest, make_config, make_env, store

__all__ = ["store"]


def published(outcome: object) -> bool:
    return any(isinstance(i, PublishIntent) for i in outcome.intents)  # type: ignore[attr-defined]


async def test_same_message_id_is_a_duplicate(store: SqliteStore) -> None:
    rules = [
        {
            "name": "billing",
            "if": {"subject": "invoice"},
            "then": {"queue": "billing", "tags": ["b"]},
        }
    ]
    runner = PipelineRunner(make_config(rules), store)
    first = make_env(
        subject="Invoice", message_id="<same@customer.test>", to=["support@example.test"]
    )
    out1 = await ingest(store, runner, first)
    assert published(out1) and first["duplicateOf"] is None
    # the sender's MTA sent a second copy in another transaction, to another of our inboxes
    second = make_env(
        subject="Invoice", message_id="<same@customer.test>", to=["billing@example.test"]
    )
    out2 = await ingest(store, runner, second)
    assert second["duplicateOf"] == first["id"]
    assert not published(out2)
    assert out2.state == "processed"
    assert second["queue"] == "billing" and second["thread"] == first["thread"]
    assert (await store.get_envelope(second["id"]))["duplicateOf"] == first["id"]


async def test_dedup_is_per_tenant(store: SqliteStore) -> None:
    runner = PipelineRunner(make_config(), store)
    a = make_env(message_id="<x@c.test>", tenant="default")
    b = make_env(message_id="<x@c.test>", tenant="acme")
    await ingest(store, runner, a)
    out = await ingest(store, runner, b)
    assert b["duplicateOf"] is None and published(out)


async def test_dedup_window(store: SqliteStore) -> None:
    runner = PipelineRunner(make_config(dedup_window=3600), store)
    now = time.time()
    old = make_env(message_id="<w@c.test>", received=now - 7200)
    await ingest(store, runner, old)
    new = make_env(message_id="<w@c.test>", received=now)
    out = await ingest(store, runner, new)
    assert new["duplicateOf"] is None and published(out)  # outside the window: delivered
    again = make_env(message_id="<w@c.test>", received=now + 60)
    await ingest(store, runner, again)
    assert again["duplicateOf"] == new["id"]  # the newer one is now the first


async def test_no_message_id_uses_content_hash(store: SqliteStore) -> None:
    runner = PipelineRunner(make_config(), store)
    a = make_env(message_id="", subject="Help", text="My  printer\nis broken")
    await ingest(store, runner, a)
    b = make_env(message_id="", subject="Re: help", text="my printer is   broken")
    await ingest(store, runner, b)
    assert b["duplicateOf"] == a["id"]
    c = make_env(message_id="", subject="Help", text="My scanner is broken")
    await ingest(store, runner, c)
    assert c["duplicateOf"] is None


async def test_multi_inbox_cc_is_one_event_with_all_recipients(store: SqliteStore) -> None:
    runner = PipelineRunner(make_config(), store)
    rcpts = ["support@example.test", "billing@example.test", "security@example.test"]
    env = make_env(to=rcpts[:1], cc=rcpts[1:], rcpt=rcpts)
    out = await ingest(store, runner, env)
    assert [type(i).__name__ for i in out.intents].count("PublishIntent") == 1
    assert env["envelope"]["rcptTo"] == rcpts
    assert {a["email"] for a in env["to"] + env["cc"]} == set(rcpts)


async def test_concurrent_first_copies_first_wins(store: SqliteStore) -> None:
    """Two workers both passed the lookup: the second commit is refused and retried."""
    runner = PipelineRunner(make_config(), store)
    a = make_env(message_id="<race@c.test>")
    b = make_env(message_id="<race@c.test>")
    for env in (a, b):
        await ingest_spool_only(store, env)
    out_a = await runner.process(a)
    out_b = await runner.process(b)
    await store.complete(a["id"], a, out_a.intents, state=out_a.state)
    with pytest.raises(DedupConflict):
        await store.complete(b["id"], b, out_b.intents, state=out_b.state)
    row = await store.get_message_row(b["id"])
    assert row["state"] == "spooled"  # nothing of the failed run was stored
    retry = await runner.process(b)
    await store.complete(b["id"], b, retry.intents, state=retry.state)
    assert b["duplicateOf"] == a["id"]


async def ingest_spool_only(store: SqliteStore, env: dict[str, object]) -> None:
    from mailgate.store.base import SpoolRecord

    await store.spool(
        SpoolRecord(
            id=str(env["id"]),
            received_at=time.time(),
            mail_from="a@c.test",
            rcpt_to=["s@example.test"],
            client_ip="",
            helo="",
            tls=False,
            raw=b"x",
        )
    )


# ------------------------------------------------------------------ threading


async def test_new_thread_gets_ticket_and_id(store: SqliteStore) -> None:
    runner = PipelineRunner(make_config(), store)
    env = make_env()
    await ingest(store, runner, env)
    t = env["thread"]
    assert t["id"] == "thr_" + env["id"].split("_", 1)[1]
    assert t["ticket"].startswith("T-") and t["ticket"][2:].isdigit()
    assert t["isReply"] is False and t["matchedBy"] == "new"


async def test_reply_by_in_reply_to_and_references(store: SqliteStore) -> None:
    runner = PipelineRunner(make_config(), store)
    first = make_env(
        message_id="<1@c.test>", cc=["bob@customer.test"], rcpt=["support@example.test"]
    )
    await ingest(store, runner, first)
    reply = make_env(message_id="<2@c.test>", in_reply_to="<1@c.test>", references=["<1@c.test>"])
    await ingest(store, runner, reply)
    assert reply["thread"]["id"] == first["thread"]["id"]
    assert reply["thread"]["ticket"] == first["thread"]["ticket"]
    assert reply["thread"]["matchedBy"] == "in-reply-to" and reply["thread"]["isReply"] is True
    # bob was copied on the first message: he is a participant; In-Reply-To unknown, References known
    third = make_env(
        message_id="<3@c.test>",
        sender="bob@customer.test",
        in_reply_to="<unknown@elsewhere>",
        references=["<1@c.test>", "<2@c.test>", "<unknown@elsewhere>"],
    )
    await ingest(store, runner, third)
    assert third["thread"]["id"] == first["thread"]["id"]
    assert third["thread"]["matchedBy"] == "references"


async def test_stranger_reply_is_not_glued_on(store: SqliteStore) -> None:
    runner = PipelineRunner(make_config(), store)
    news = make_env(message_id="<news@c.test>", subject="Our newsletter")
    await ingest(store, runner, news)
    stranger = make_env(
        message_id="<s@x.test>", sender="mallory@other.test", in_reply_to="<news@c.test>"
    )
    out = await ingest(store, runner, stranger)
    assert stranger["thread"]["matchedBy"] == "new"
    assert stranger["thread"]["id"] != news["thread"]["id"]
    notes = [r for s in out.results if s.stage == "thread" for r in s.reasons]
    assert any("not a participant" in n for n in notes)


async def test_subject_token_and_alias(store: SqliteStore) -> None:
    runner = PipelineRunner(make_config(), store)
    first = make_env(message_id="<t1@c.test>")
    await ingest(store, runner, first)
    ticket = first["thread"]["ticket"]
    by_subject = make_env(message_id="<t2@c.test>", subject=f"Re: [Ticket {ticket}] my printer")
    await ingest(store, runner, by_subject)
    assert by_subject["thread"]["id"] == first["thread"]["id"]
    assert by_subject["thread"]["matchedBy"] == "subject-token"
    alias = f"support+{ticket}@example.test"
    by_alias = make_env(message_id="<t3@c.test>", to=[alias], rcpt=[alias])
    await ingest(store, runner, by_alias)
    assert by_alias["thread"]["id"] == first["thread"]["id"]
    assert by_alias["thread"]["matchedBy"] == "alias"
    guessed = make_env(message_id="<t4@c.test>", sender="eve@other.test", subject=f"[{ticket}] hi")
    await ingest(store, runner, guessed)
    assert guessed["thread"]["matchedBy"] == "new"


async def test_threads_are_per_tenant(store: SqliteStore) -> None:
    runner = PipelineRunner(make_config(), store)
    first = make_env(message_id="<p1@c.test>", tenant="acme")
    await ingest(store, runner, first)
    other = make_env(message_id="<p2@c.test>", in_reply_to="<p1@c.test>", tenant="default")
    await ingest(store, runner, other)
    assert other["thread"]["matchedBy"] == "new"


async def test_duplicate_thread_rows_are_idempotent(store: SqliteStore) -> None:
    """complete() of an already-processed message applies nothing twice."""
    runner = PipelineRunner(make_config(), store)
    env = make_env(message_id="<i@c.test>")
    out = await ingest(store, runner, env)
    await store.complete(env["id"], env, out.intents, state=out.state)  # a repeated completion
    rows = await store._read(
        "SELECT message_count FROM threads WHERE id = ?", (env["thread"]["id"],)
    )
    assert rows[0]["message_count"] == 1


async def test_replay_of_an_old_first_message_is_not_a_duplicate_of_a_later_one(
    store: SqliteStore,
) -> None:
    runner = PipelineRunner(make_config(dedup_window=3600), store)
    now = time.time()
    old = make_env(message_id="<r@c.test>", received=now - 7200)
    await ingest(store, runner, old)
    new = make_env(message_id="<r@c.test>", received=now)
    await ingest(store, runner, new)  # outside the window: it now holds the key
    replayed = dict(await store.get_envelope(old["id"]))
    await runner.process(replayed, mode="replay")
    assert replayed["duplicateOf"] is None
