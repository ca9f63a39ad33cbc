"""A reply stored before its original: the original joins the reply's thread (issue 13).

Out-of-order arrival (greylisting, a slow relay) and two nodes storing the pair within
milliseconds are the same case for the thread stage: the reply's new thread holds the
original's Message-ID with a placeholder, and the original finds it (``matchedBy: awaited``).
"""

from __future__ import annotations

from mailgate.pipeline.runner import PipelineRunner
from mailgate.store.sqlite import SqliteStore
from tests.support.pipeline import ingest, make_config, make_env, store

__all__ = ["store"]


async def test_original_after_its_reply_joins_the_reply_thread(store: SqliteStore) -> None:
    runner = PipelineRunner(make_config(), store)
    reply = make_env(message_id="<re1@c.test>", in_reply_to="<orig1@c.test>", subject="Re: help")
    await ingest(store, runner, reply)
    assert reply["thread"]["matchedBy"] == "new"
    original = make_env(message_id="<orig1@c.test>", subject="help")
    await ingest(store, runner, original)
    assert original["thread"]["matchedBy"] == "awaited"
    assert original["thread"]["id"] == reply["thread"]["id"]
    assert original["thread"]["ticket"] == reply["thread"]["ticket"]
    # and a later reply naming the original finds the same thread through the real row
    later = make_env(message_id="<re2@c.test>", in_reply_to="<orig1@c.test>")
    await ingest(store, runner, later)
    assert later["thread"]["matchedBy"] == "in-reply-to"
    assert later["thread"]["id"] == reply["thread"]["id"]


async def test_a_stranger_cannot_claim_a_message_id_in_advance(store: SqliteStore) -> None:
    runner = PipelineRunner(make_config(), store)
    bait = make_env(
        message_id="<bait@x.test>", sender="mallory@other.test", in_reply_to="<victim@c.test>"
    )
    await ingest(store, runner, bait)
    victim = make_env(message_id="<victim@c.test>", subject="my invoice")
    out = await ingest(store, runner, victim)
    assert victim["thread"]["matchedBy"] == "new"
    assert victim["thread"]["id"] != bait["thread"]["id"]
    notes = [r for s in out.results if s.stage == "thread" for r in s.reasons]
    assert any("not a participant" in n for n in notes)
