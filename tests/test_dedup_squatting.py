"""Message-ID squatting: a Message-ID alone never suppresses a later message.

Through a real ``mailgate serve`` (SMTP listener and worker): a squatter who sends a Message-ID
first does not suppress the genuine message, which is delivered (an event) and flagged; the
genuine sender's own resend is still a duplicate. The pipeline cases (races, legacy index
entries, attachments, replay) run the real pipeline on the real store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from mailgate.pipeline.runner import PipelineRunner
from mailgate.store.delivery import PublishIntent
from mailgate.store.pipeline import DedupConflict, DedupIntent
from mailgate.store.sqlite import SqliteStore
from tests.support.pipeline import ingest, make_config, make_env, store
from tests.support.reply_harness import message
from tests.support.server import MailgateServer

__all__ = ["store"]


def published(outcome: object) -> bool:
    return any(isinstance(i, PublishIntent) for i in outcome.intents)  # type: ignore[attr-defined]


def events_of(srv: MailgateServer, msg_id: str) -> int:
    with srv.db() as conn:
        (n,) = conn.execute("SELECT COUNT(*) FROM events WHERE msg_id = ?", (msg_id,)).fetchone()
    return int(n)


WEBHOOK = (
    '[[webhooks]]\nurl = "http://127.0.0.1:9/hook"\nname = "helpdesk"\n'
    'secrets = ["whsec_dGVzdC1zZWNyZXQtZm9yLXNxdWF0dGluZy10ZXN0czAw"]\n'
)


def test_squatted_message_id_is_delivered_and_flagged_through_serve(
    mailgate_server: Callable[..., MailgateServer],
) -> None:
    srv = mailgate_server(extra_toml=WEBHOOK)
    mid = "<order-4711@shop.example.org>"
    # the squatter guesses the Message-ID and sends first
    srv.send(
        message(
            "Your order",
            sender="Mallory <mallory@evil.example>",
            message_id=mid,
            body="Click here.\r\n",
        ),
        mail_from="mallory@evil.example",
    )
    srv.wait_processed(1)
    # the genuine message: another sender, another body -> delivered, flagged
    srv.send(
        message(
            "Your order",
            sender="Shop <orders@shop.example.org>",
            message_id=mid,
            body="Your order 4711 has shipped.\r\n",
        ),
        mail_from="orders@shop.example.org",
    )
    srv.wait_processed(2)
    # the shop's MTA sends the same message again, to another of our inboxes
    srv.send(
        message(
            "Your order",
            sender="Shop <orders@shop.example.org>",
            message_id=mid,
            body="Your order 4711 has shipped.\r\n",
        ),
        mail_from="orders@shop.example.org",
        rcpt_to=["billing@example.test"],
    )
    srv.wait_processed(3)
    squat, genuine, resend = srv.envelopes()
    assert squat.get("messageIdReused") is None and squat["duplicateOf"] is None
    assert genuine["duplicateOf"] is None
    assert genuine["messageIdReused"] is True
    assert genuine["messageIdReusedOf"] == squat["id"]
    assert events_of(srv, genuine["id"]) == 1  # an event: the helpdesk sees it
    assert resend["duplicateOf"] == genuine["id"]  # not the squatter's
    assert events_of(srv, resend["id"]) == 0
    assert resend["thread"] == genuine["thread"]


async def test_same_sender_same_body_is_a_duplicate_other_body_is_not(store: SqliteStore) -> None:
    runner = PipelineRunner(make_config(), store)
    first = make_env(message_id="<m@c.test>", text="Printer broken")
    assert published(await ingest(store, runner, first))
    same = make_env(message_id="<m@c.test>", text="Printer  broken\n", to=["billing@example.test"])
    out = await ingest(store, runner, same)
    assert same["duplicateOf"] == first["id"] and not published(out)
    assert "messageIdReused" not in same
    other_body = make_env(message_id="<m@c.test>", text="Scanner broken")
    out = await ingest(store, runner, other_body)
    assert other_body["duplicateOf"] is None and published(out)
    assert other_body["messageIdReusedOf"] == first["id"]
    other_sender = make_env(message_id="<m@c.test>", text="Printer broken", sender="eve@x.test")
    out = await ingest(store, runner, other_sender)
    assert other_sender["duplicateOf"] is None and published(out)
    assert other_sender["messageIdReused"] is True
    assert other_sender["messageIdReusedOf"] == first["id"]
    # a resend of the reused one is a duplicate of that one
    again = make_env(message_id="<m@c.test>", text="Scanner broken")
    await ingest(store, runner, again)
    assert again["duplicateOf"] == other_body["id"]


async def test_other_attachments_are_other_content(store: SqliteStore) -> None:
    runner = PipelineRunner(make_config(), store)
    a = make_env(message_id="<att@c.test>", attachments=[{"filename": "a.pdf", "sha256": "aa"}])
    b = make_env(message_id="<att@c.test>", attachments=[{"filename": "a.pdf", "sha256": "bb"}])
    c = make_env(message_id="<att@c.test>", attachments=[{"filename": "x.pdf", "sha256": "aa"}])
    for env in (a, b, c):
        await ingest(store, runner, env)
    assert b["duplicateOf"] is None and b["messageIdReusedOf"] == a["id"]
    assert c["duplicateOf"] == a["id"]  # same bytes under another name: the same content


async def test_entries_from_before_fingerprints_never_suppress(store: SqliteStore) -> None:
    """An index entry written before this change has no content key: deliver and flag."""
    runner = PipelineRunner(make_config(), store)
    old = make_env(message_id="<legacy@c.test>")
    await ingest(store, runner, old)
    await store._write(
        lambda conn: conn.execute("DELETE FROM dedup_keys WHERE key LIKE 'mid:legacy@c.test#%'")
    )
    copy = make_env(message_id="<legacy@c.test>")
    out = await ingest(store, runner, copy)
    assert copy["duplicateOf"] is None and published(out)
    assert copy["messageIdReusedOf"] == old["id"]


async def test_racing_messages_with_other_content_are_flagged_on_retry(
    store: SqliteStore,
) -> None:
    """Both passed the look-up before either was stored: the second commit is refused (it
    claims the Message-ID's first entry), and its run again flags it."""
    from tests.test_pipeline_dedup_thread import ingest_spool_only

    runner = PipelineRunner(make_config(), store)
    a = make_env(message_id="<race2@c.test>", text="one")
    b = make_env(message_id="<race2@c.test>", text="two")
    for env in (a, b):
        await ingest_spool_only(store, env)
    out_a, out_b = await runner.process(a), await runner.process(b)
    keys = [i.key for i in out_b.intents if isinstance(i, DedupIntent)]
    assert keys[0] == "mid:race2@c.test" and keys[1].startswith("mid:race2@c.test#")
    await store.complete(a["id"], a, out_a.intents, state=out_a.state)
    try:
        await store.complete(b["id"], b, out_b.intents, state=out_b.state)
    except DedupConflict:
        pass
    else:  # pragma: no cover - the assertion below explains
        raise AssertionError("the second first-claim of a Message-ID must be refused")
    retry = await runner.process(b)
    await store.complete(b["id"], b, retry.intents, state=retry.state)
    assert b["duplicateOf"] is None and b["messageIdReusedOf"] == a["id"]
    assert published(retry)


async def test_replay_keeps_the_flag_and_is_not_its_own_duplicate(store: SqliteStore) -> None:
    runner = PipelineRunner(make_config(), store)
    first = make_env(message_id="<rp@c.test>", text="one")
    second = make_env(message_id="<rp@c.test>", text="two")
    await ingest(store, runner, first)
    await ingest(store, runner, second)
    replayed: dict[str, Any] = dict(await store.get_envelope(second["id"]))
    await runner.process(replayed, mode="replay")
    assert replayed["duplicateOf"] is None
    assert replayed["messageIdReusedOf"] == first["id"]
    replayed_first: dict[str, Any] = dict(await store.get_envelope(first["id"]))
    replayed_first.pop("messageIdReused", None)
    await runner.process(replayed_first, mode="replay")
    assert replayed_first["duplicateOf"] is None and "messageIdReused" not in replayed_first


async def test_window_still_applies_to_content_keys(store: SqliteStore) -> None:
    runner = PipelineRunner(make_config(dedup_window=3600), store)
    now = time.time()
    old = make_env(message_id="<win@c.test>", received=now - 7200)
    await ingest(store, runner, old)
    new = make_env(message_id="<win@c.test>", received=now)
    out = await ingest(store, runner, new)
    assert new["duplicateOf"] is None and "messageIdReused" not in new and published(out)
