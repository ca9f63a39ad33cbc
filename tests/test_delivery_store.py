"""The delivery area of the SQLite store: event log, outbox claims, ordering, leases, DLQ."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mailgate.store.delivery import AttemptOutcome, PublishIntent, event_id_for
from mailgate.store.sqlite_base import apply_intents
from tests.support.delivery import envelope_for, open_store, publish


async def count(store, sql: str, params=()) -> int:  # type: ignore[no-untyped-def]
    row = await store._read_one(sql, params)
    return int(row[0])


def test_event_id_is_stable_and_derived_from_the_message() -> None:
    assert event_id_for("msg_01JBXABCDEF") == "evt_01JBXABCDEF"
    assert event_id_for("msg_01JBXABCDEF", "message.quarantined") == "evt_01JBXABCDEF_quarantined"


async def test_publish_writes_one_event_and_one_outbox_row_per_target(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        msg_id = await publish(store, targets=("a", "b", "a"), thread="thr_1")
        assert await count(store, "SELECT COUNT(*) FROM events") == 1
        assert await count(store, "SELECT COUNT(*) FROM outbox") == 2
        ev = await store.get_event("default", msg_id)
        assert ev.id == event_id_for(msg_id)
        assert ev.ordering_key == "thr_1"
        assert ev.envelope["id"] == msg_id
        assert {d["target"] for d in ev.deliveries} == {"a", "b"}


async def test_publish_is_idempotent_and_serves_a_quarantine_release(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        # a quarantined message: stored without a publish
        msg_id = await publish(store, targets=())
        await store._write(lambda conn: conn.execute("DELETE FROM events"))
        env = envelope_for(msg_id)
        intent = PublishIntent(targets=("hook",), ordering_key=None)

        # the release applies the same intent in its own write, maybe twice (a retried release)
        for _ in range(2):
            await store._write(lambda conn: apply_intents(conn, msg_id, env, [intent]))
        assert await count(store, "SELECT COUNT(*) FROM events") == 1
        assert await count(store, "SELECT COUNT(*) FROM outbox") == 1
        # completing an already-processed message again writes nothing twice either
        await store.complete(msg_id, env, [intent], state="processed")
        assert await count(store, "SELECT COUNT(*) FROM outbox") == 1


async def test_claim_keeps_thread_order_and_leases(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        first = await publish(store, thread="thr_A")
        second = await publish(store, thread="thr_A")
        other = await publish(store, thread="thr_B")
        items = await store.claim_outbox("hook", 10, owner="w1", lease=30)
        assert [i.msg_id for i in items] == [first, other]  # second waits for first
        # leased rows are not handed out twice
        assert await store.claim_outbox("hook", 10, owner="w2", lease=30) == []
        await store.finish_attempt(items[1], AttemptOutcome("delivered", status=200), owner="w1")
        # a retry scheduled later still holds the thread back
        a = items[0]
        later = time.time() + 3600
        await store.finish_attempt(
            a, AttemptOutcome("retry", status=500, next_attempt_at=later), owner="w1"
        )
        assert await store.claim_outbox("hook", 10, owner="w1", lease=30) == []
        # once it is settled (here: dead), the next event of the thread goes
        again = await store.claim_outbox("hook", 10, owner="w1", lease=30, now=later + 1)
        assert [i.msg_id for i in again] == [first]
        await store.finish_attempt(again[0], AttemptOutcome("dead", status=500), owner="w1")
        nxt = await store.claim_outbox("hook", 10, owner="w1", lease=30)
        assert [i.msg_id for i in nxt] == [second]
        # an expired lease is claimable again (a crashed worker)
        stale = await store.claim_outbox("hook", 10, owner="w9", lease=30, now=time.time() + 60)
        assert {i.msg_id for i in stale} == {second}


async def test_release_leases_gives_rows_back(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        await publish(store)
        assert len(await store.claim_outbox("hook", 10, owner="w1", lease=300)) == 1
        assert await store.release_leases("w1") == 1
        assert len(await store.claim_outbox("hook", 10, owner="w2", lease=300)) == 1


async def test_delivered_marks_the_event_consumed_for_the_api(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        msg_id = await publish(store)
        assert [e.msg_id for e in await store.list_events("default")] == [msg_id]
        (item,) = await store.claim_outbox("hook", 1, owner="w", lease=30)
        await store.finish_attempt(item, AttemptOutcome("delivered", status=200), owner="w")
        assert await store.list_events("default") == []
        ev = await store.get_event("default", item.event_id)
        assert ev.acked_by == "webhook:hook" and ev.delivered_at is not None
        assert ev.deliveries[0]["state"] == "delivered"


async def test_dlq_list_show_retry_purge(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        await publish(store)
        await publish(store)
        for item in await store.claim_outbox("hook", 10, owner="w", lease=30):
            await store.finish_attempt(
                item, AttemptOutcome("dead", status=400, error="HTTP 400: bad"), owner="w"
            )
        dead = await store.dlq_list()
        assert len(dead) == 2
        shown = await store.dlq_get(dead[0].id)
        assert shown.history[0]["status"] == 400 and shown.history[0]["outcome"] == "dead"
        assert (await store.outbox_stats()).dead == 2
        assert await store.dlq_retry([dead[0].id]) == 1
        assert len(await store.dlq_list()) == 1
        assert len(await store.claim_outbox("hook", 10, owner="w", lease=30)) == 1
        assert await store.dlq_purge(time.time() - 3600) == 0
        assert await store.dlq_purge(time.time() + 1) == 1
        assert await store.dlq_list() == []


async def test_disable_and_enable_target(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        await store.disable_target("hook", "410 Gone")
        assert await store.disabled_targets() == {"hook": "410 Gone"}
        assert await store.enable_target("hook") is True
        assert await store.enable_target("hook") is False
        assert await store.disabled_targets() == {}


async def test_attachment_index(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        att = {
            "id": "att_1",
            "filename": "a.pdf",
            "contentType": "application/pdf",
            "size": 3,
            "sha256": "a" * 64,
        }
        msg_id = await publish(store, attachments=[att])
        rec = await store.get_attachment("att_1")
        assert rec.msg_id == msg_id and rec.sha256 == "a" * 64 and rec.filename == "a.pdf"


async def test_delivery_metrics_are_kept_in_the_store(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from mailgate.delivery.metrics import DeliveryCollector

    async with open_store(tmp_path) as store:
        for _ in range(3):
            await publish(store)
        items = await store.claim_outbox("hook", 10, owner="w", lease=30)
        await store.finish_attempt(
            items[0], AttemptOutcome("delivered", status=200, latency=0.003), owner="w"
        )
        await store.finish_attempt(
            items[1], AttemptOutcome("retry", status=503, latency=0.2, next_attempt_at=0), owner="w"
        )
        await store.finish_attempt(
            items[2], AttemptOutcome("dead", status=400, latency=50.0), owner="w"
        )
        await store.set_delivery_metric("webhook_breaker_open", {"target": "hook"}, 1.0)
        collector = DeliveryCollector()
        collector.stored = await store.delivery_metrics()
        collector.stats = await store.outbox_stats()
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    for outcome in ("delivered", "retry", "dead"):
        assert f'mailgate_webhook_deliveries_total{{outcome="{outcome}",target="hook"}} 1.0' in text
    # cumulative buckets: 3 ms <= 5 ms; 200 ms <= 250 ms; 50 s only in +Inf
    assert 'mailgate_webhook_attempt_seconds_bucket{le="0.005",target="hook"} 1.0' in text
    assert 'mailgate_webhook_attempt_seconds_bucket{le="0.25",target="hook"} 2.0' in text
    assert 'mailgate_webhook_attempt_seconds_bucket{le="30.0",target="hook"} 2.0' in text
    assert 'mailgate_webhook_attempt_seconds_bucket{le="+Inf",target="hook"} 3.0' in text
    assert 'mailgate_webhook_attempt_seconds_sum{target="hook"} 50.203' in text
    assert "mailgate_accept_to_delivered_seconds_count 1.0" in text
    assert 'mailgate_webhook_breaker_open{target="hook"} 1.0' in text
    assert "mailgate_dlq_depth 1.0" in text


async def test_publish_survives_undecodable_attachment_names(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        msg_id = await publish(store, targets=())
        att = {
            "id": "att_2",
            "filename": "bad\udcff.pdf",
            "contentType": "application/pdf",
            "size": 1,
            "sha256": "b" * 64,
        }
        env = envelope_for(msg_id, attachments=[att])
        intent = PublishIntent(targets=("hook",))
        await store._write(lambda conn: apply_intents(conn, msg_id, env, [intent]))
        rec = await store.get_attachment("att_2")
        assert rec.msg_id == msg_id and rec.filename == "bad?.pdf"


async def test_change_counter_moves_with_every_commit_of_any_connection(tmp_path: Path) -> None:
    """The webhook dispatcher polls ``change_counter`` (on the store's lookup connection, no
    thread hop) to see events published by other processes: it must move when this store's
    writer commits and when another connection does, and stay put otherwise."""
    import sqlite3

    async with open_store(tmp_path) as store:
        first = await store.change_counter()
        assert await store.change_counter() == first
        await publish(store, targets=("a",))
        second = await store.change_counter()
        assert second != first
        other = sqlite3.connect(store.path, isolation_level=None)
        other.execute("UPDATE outbox SET attempts = attempts WHERE 0 = 1")  # no change: no commit
        assert await store.change_counter() == second
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO webhook_targets (name, disabled_at) VALUES ('x', 1)")
        other.execute("COMMIT")
        other.close()
        assert await store.change_counter() != second


async def test_dead_letter_and_thread_order_indexes_hold_only_their_rows(tmp_path: Path) -> None:
    """``outbox_dead`` holds dead rows and ``outbox_order`` pending ones (migration 010): a
    delivered webhook leaves both, and the queries that need them still find and use them."""
    import sqlite3

    async with open_store(tmp_path) as store:
        delivered = await publish(store, targets=("a",), thread="thr_1")
        dead = await publish(store, targets=("a",), thread="thr_1")
        waiting = await publish(store, targets=("a",), thread="thr_1")
        (first,) = await store.claim_outbox("a", 10, owner="n1", lease=30)
        assert first.msg_id == delivered  # the later rows of thr_1 wait for it
        await store.finish_attempt(first, AttemptOutcome("delivered", status=200), owner="n1")
        (second,) = await store.claim_outbox("a", 10, owner="n1", lease=30)
        assert second.msg_id == dead
        await store.finish_attempt(second, AttemptOutcome("dead", status=400), owner="n1")
        (third,) = await store.claim_outbox("a", 10, owner="n1", lease=30)
        assert third.msg_id == waiting
        assert [d.msg_id for d in await store.dlq_list(limit=10)] == [dead]

    conn = sqlite3.connect(tmp_path / "mailgate.sqlite")
    try:
        in_dead = conn.execute(
            "SELECT state FROM outbox INDEXED BY outbox_dead WHERE state = 'dead'"
        ).fetchall()
        in_order = conn.execute(
            "SELECT state FROM outbox INDEXED BY outbox_order"
            " WHERE target = 'a' AND ordering_key = 'thr_1' AND state = 'pending'"
        ).fetchall()
        assert [r[0] for r in in_dead] == ["dead"]
        assert [r[0] for r in in_order] == ["pending"]
        # partial: neither can answer for the delivered row (a full index could)
        for index, where in (
            ("outbox_dead", "state = 'delivered'"),
            ("outbox_order", "target = 'a' AND state = 'delivered'"),
        ):
            with pytest.raises(sqlite3.OperationalError, match="no query solution"):
                conn.execute(f"SELECT COUNT(*) FROM outbox INDEXED BY {index} WHERE {where}")
        plan = " ".join(
            r[3]
            for r in conn.execute(
                "EXPLAIN QUERY PLAN SELECT id FROM outbox WHERE state = 'dead' ORDER BY dead_at"
            )
        )
        assert "outbox_dead" in plan
    finally:
        conn.close()
