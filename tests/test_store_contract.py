"""The store port's contract, run against both backends (issue 13).

Every test opens stores through ``app.build_store`` from a config (as ``serve`` does). "Two
nodes" are two store instances on one database (one SQLite file, or one PostgreSQL database),
each with its own lease owner: they race on claims, dedup keys and ticket numbers, and the
contract says who wins.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from ulid import ULID

from mailgate.app import build_store
from mailgate.config import Config, StoreConfig, load_config
from mailgate.store.base import NotFound, SpoolRecord, StoreError
from mailgate.store.delivery import AttemptOutcome, PublishIntent, event_id_for
from mailgate.store.notify import OUTBOX
from mailgate.store.pipeline import DedupConflict, DedupIntent, ThreadIntent
from mailgate.store.ports import Store, lease_owner

BACKENDS = ["sqlite", "postgresql"]
Nodes = Callable[..., Any]


def _config(backend: str, tmp_path: Path, request: pytest.FixtureRequest, node: str) -> Config:
    cfg = load_config(None, env={"MAILGATE_DATA_DIR": str(tmp_path / "data")})
    store = StoreConfig(data_dir=str(tmp_path / "data"), node=node, backend=backend)  # type: ignore[arg-type]
    if backend == "postgresql":
        # one fresh database per test (``pg_dsn``), shared by the test's nodes
        store = dataclasses.replace(store, dsn=request.getfixturevalue("pg_dsn"))
    return dataclasses.replace(cfg, store=store)


@pytest.fixture(params=BACKENDS)
def nodes(request: pytest.FixtureRequest, tmp_path: Path) -> Nodes:
    """``async with nodes(2) as (a, b)``: stores of one database, as separate nodes."""
    backend = request.param

    @asynccontextmanager
    async def open_nodes(count: int = 1) -> AsyncIterator[list[Store]]:
        stores = [
            build_store(_config(backend, tmp_path, request, f"node{i}")) for i in range(count)
        ]
        for s in stores:
            await s.open()
        try:
            yield stores
        finally:
            for s in stores:
                await s.close()

    return open_nodes


def record(i: int = 0, tenant: str = "default", raw: bytes | None = None) -> SpoolRecord:
    return SpoolRecord(
        id=f"msg_{ULID()}",
        received_at=time.time(),
        mail_from=f"sender{i}@example.org",
        rcpt_to=["support@example.test"],
        client_ip="203.0.113.7",
        helo="mx.example.org",
        tls=False,
        raw=raw or f"Subject: m{i}\r\n\r\nbody {i}\r\n".encode(),
        tenant=tenant,
        trace_id=f"trace{i}",
    )


def envelope(msg_id: str, tenant: str = "default") -> dict[str, Any]:
    return {"id": msg_id, "tenant": tenant, "subject": "hello", "attachments": []}


# ---------------------------------------------------------------------------- spool and claims


async def test_a_backlog_worker_skips_the_oldest_free_messages(nodes: Nodes) -> None:
    """``skip``: an extra worker takes only what waits beyond the first ``skip`` free messages
    (``ingest.backlog_per_worker``); leased messages do not count."""
    async with nodes(1) as (store,):
        recs = [record(i) for i in range(6)]
        await store.spool(*recs)
        extra, first = lease_owner("node0"), lease_owner("node0")
        assert await store.claim_spooled(10, owner=extra, skip=6) == []  # no backlog beyond 6
        got = await store.claim_spooled(2, owner=extra, skip=3)
        assert [m.id for m in got] == [recs[3].id, recs[4].id]
        assert [m.id for m in await store.claim_spooled(10, owner=first)] == [
            r.id for r in (recs[0], recs[1], recs[2], recs[5])
        ]
        assert await store.claim_spooled(10, owner=extra, skip=1) == []  # all leased


async def test_spool_claim_complete_once(nodes: Nodes) -> None:
    async with nodes(1) as (store,):
        recs = [record(i) for i in range(5)]
        await store.spool(*recs)
        owner = lease_owner("node0")
        claimed = await store.claim_spooled(10, owner=owner)
        assert [m.id for m in claimed] == [r.id for r in recs]  # oldest first
        assert claimed[0].raw == recs[0].raw
        assert claimed[0].rcpt_to == ["support@example.test"]
        assert await store.claim_spooled(10, owner=lease_owner("node0")) == []  # all leased
        await store.complete(recs[0].id, envelope(recs[0].id), [], state="processed")
        await store.complete(recs[0].id, {"id": "changed"}, [], state="dead")  # no effect
        assert (await store.get_envelope(recs[0].id))["subject"] == "hello"
        assert await store.get_raw(recs[1].id) == recs[1].raw
        states = {m.id: m.state for m in await store.list_messages(limit=10)}
        assert states[recs[0].id] == "processed"
        assert sum(1 for s in states.values() if s == "spooled") == 4
        with pytest.raises(NotFound):
            await store.get_raw("msg_nope")


async def test_expired_lease_is_taken_over_by_another_node(nodes: Nodes) -> None:
    async with nodes(2) as (a, b):
        rec = record()
        await a.spool(rec)
        first = await a.claim_spooled(5, owner=lease_owner("node0"), lease=0.3)
        assert [m.id for m in first] == [rec.id]
        assert await b.claim_spooled(5, owner=lease_owner("node1")) == []
        await asyncio.sleep(0.4)  # node0 "died": its lease runs out
        taken = await b.claim_spooled(5, owner=lease_owner("node1"))
        assert [m.id for m in taken] == [rec.id]


async def test_released_leases_and_failures_go_back_to_the_spool(nodes: Nodes) -> None:
    async with nodes(2) as (a, b):
        r1, r2 = record(1), record(2)
        await a.spool(r1, r2)
        owner = lease_owner("node0")
        assert len(await a.claim_spooled(5, owner=owner)) == 2
        assert owner in await b.spool_lease_owners()
        assert await a.fail(r1.id, "boom", max_attempts=2) == "spooled"
        again = await b.claim_spooled(5, owner=lease_owner("node1"))
        assert [m.id for m in again] == [r1.id]  # the failed one, lease cleared; r2 still held
        assert again[0].attempts == 1
        assert await a.release_spool_leases(owner) == 1
        assert [m.id for m in await b.claim_spooled(5, owner=lease_owner("node1"))] == [r2.id]
        assert await b.fail(r1.id, "boom", max_attempts=2) == "dead"


async def test_two_nodes_racing_claim_each_message_once(nodes: Nodes) -> None:
    async with nodes(2) as (a, b):
        recs = [record(i) for i in range(120)]
        for i in range(0, len(recs), 20):
            await (a if i % 40 else b).spool(*recs[i : i + 20])

        async def drain(store: Store, owner: str) -> list[str]:
            got: list[str] = []
            while True:
                batch = await store.claim_spooled(7, owner=owner)
                if not batch:
                    return got
                for m in batch:
                    got.append(m.id)
                    await store.complete(m.id, envelope(m.id), [], state="processed")

        got_a, got_b = await asyncio.gather(
            drain(a, lease_owner("node0")), drain(b, lease_owner("node1"))
        )
        assert not set(got_a) & set(got_b)
        assert sorted(got_a + got_b) == sorted(r.id for r in recs)
        assert len(got_a + got_b) == len(recs)


# ---------------------------------------------------------------------------- events


async def _processed(store: Store, rec: SpoolRecord, *intents: Any) -> None:
    await store.spool(rec)
    await store.complete(rec.id, envelope(rec.id), list(intents), state="processed")


async def test_a_backlog_worker_delivers_only_beyond_the_first_due_rows(nodes: Nodes) -> None:
    """``claim_outbox(skip=…)``: a backlog worker's webhook dispatcher leaves the first
    ``skip`` due deliveries to the first worker; rows held back by their thread's order and
    leased rows are not due and do not count."""
    async with nodes(1) as (store,):
        recs = [record(i) for i in range(6)]
        for i, rec in enumerate(recs):  # r0, r1 of one thread: r1 waits behind r0
            thread = "thr_0" if i < 2 else f"thr_{i}"
            await _processed(store, rec, PublishIntent(targets=("hook",), ordering_key=thread))
        extra, first = lease_owner("node0"), lease_owner("node0")
        due = [recs[0], recs[2], recs[3], recs[4], recs[5]]  # r1 is held back
        assert await store.claim_outbox("hook", 10, owner=extra, lease=30, skip=5) == []
        got = await store.claim_outbox("hook", 2, owner=extra, lease=30, skip=3)
        assert [i.msg_id for i in got] == [due[3].id, due[4].id]
        rest = await store.claim_outbox("hook", 10, owner=first, lease=30)
        assert [i.msg_id for i in rest] == [r.id for r in due[:3]]
        assert await store.claim_outbox("hook", 10, owner=extra, lease=30, skip=0) == []


async def test_events_leave_once_per_lease_and_in_thread_order(nodes: Nodes) -> None:
    async with nodes(2) as (a, b):
        woke = asyncio.Event()
        loop = asyncio.get_running_loop()

        def wake() -> None:
            loop.call_soon_threadsafe(woke.set)

        b.notifier.subscribe(OUTBOX, wake)
        try:
            r1, r2, r3 = record(1), record(2), record(3)
            pub = PublishIntent(targets=("hook",), ordering_key="thr_1")
            await _processed(a, r1, pub)
            await asyncio.wait_for(woke.wait(), 5)  # node b heard of node a's event
            await _processed(a, r2, pub)
            await _processed(a, r3, PublishIntent(targets=("hook",), ordering_key="thr_2"))
        finally:
            b.notifier.unsubscribe(OUTBOX, wake)
        events = await b.list_events("default")
        assert [e.id for e in events] == [event_id_for(r.id) for r in (r1, r2, r3)]
        oa, ob = lease_owner("node0"), lease_owner("node1")
        got_a = await a.claim_outbox("hook", 10, owner=oa, lease=30)
        # per-thread order: r2 waits behind r1 (pending, leased by node a); thr_2 goes
        assert [i.msg_id for i in got_a] == [r1.id, r3.id]
        assert await b.claim_outbox("hook", 10, owner=ob, lease=30) == []
        await a.finish_attempt(got_a[0], AttemptOutcome("delivered", status=200), owner=oa)
        got_b = await b.claim_outbox("hook", 10, owner=ob, lease=30)
        assert [i.msg_id for i in got_b] == [r2.id]
        assert got_b[0].event_id == event_id_for(r2.id)  # the webhook-id is stable
        ev = await b.get_event("default", r1.id)
        assert ev.acked_by == "webhook:hook"
        assert [d["state"] for d in ev.deliveries] == ["delivered"]
        pending = await b.list_events("default")
        assert [e.id for e in pending] == [event_id_for(r2.id), event_id_for(r3.id)]


async def test_a_dead_nodes_delivery_is_taken_over_after_the_lease(nodes: Nodes) -> None:
    async with nodes(2) as (a, b):
        rec = record()
        await _processed(a, rec, PublishIntent(targets=("hook",)))
        oa, ob = lease_owner("node0"), lease_owner("node1")
        first = await a.claim_outbox("hook", 10, owner=oa, lease=0.3)
        assert len(first) == 1
        assert await b.claim_outbox("hook", 10, owner=ob, lease=30) == []
        await asyncio.sleep(0.4)
        again = await b.claim_outbox("hook", 10, owner=ob, lease=30)
        assert [i.event_id for i in again] == [first[0].event_id]
        await b.finish_attempt(again[0], AttemptOutcome("delivered", status=204), owner=ob)
        # the old owner coming back cannot overwrite what the new owner recorded
        await a.finish_attempt(first[0], AttemptOutcome("dead", status=500), owner=oa)
        ev = await a.get_event("default", rec.id)
        assert [d["state"] for d in ev.deliveries] == ["delivered"]


# ---------------------------------------------------------------------------- dedup, threads, tickets


async def test_dedup_race_between_two_nodes_has_one_winner(nodes: Nodes) -> None:
    async with nodes(2) as (a, b):
        r1, r2 = record(1), record(2)
        await a.spool(r1)
        await b.spool(r2)
        now = time.time()
        key = DedupIntent(tenant="default", key="mid:<same@example.org>", seen_at=now, window=3600)
        results = await asyncio.gather(
            a.complete(r1.id, envelope(r1.id), [key], state="processed"),
            b.complete(r2.id, envelope(r2.id), [key], state="processed"),
            return_exceptions=True,
        )
        conflicts = [r for r in results if isinstance(r, DedupConflict)]
        assert len(conflicts) == 1, results
        assert sum(1 for r in results if r is None) == 1
        hit = await a.find_duplicate("default", key.key, now - 10)
        assert hit is not None
        winner = r1.id if results[0] is None else r2.id
        assert hit.msg_id == winner
        loser = r2.id if winner == r1.id else r1.id
        assert (await b.get_message_row(loser))["state"] == "spooled"  # nothing of it stored


async def test_concurrent_completions_on_one_node_each_get_their_own_outcome(
    nodes: Nodes,
) -> None:
    """Completions in flight at once may share a transaction (PostgreSQL batches them): a
    conflict of one message costs the others nothing, and every event is written once."""
    async with nodes(1) as (store,):
        recs = [record(i) for i in range(8)]
        await store.spool(*recs)
        claimed = await store.claim_spooled(10, owner=lease_owner("node0"))
        assert len(claimed) == 8
        now = time.time()
        key = DedupIntent(tenant="default", key="mid:<dup@example.org>", seen_at=now, window=3600)
        await store.complete(recs[0].id, envelope(recs[0].id), [key], state="processed")

        def intents(i: int) -> list[Any]:
            publish = PublishIntent(event_type="message.received", targets=("t",))
            return [key, publish] if i == 4 else [publish]  # #4 repeats #0's key

        results = await asyncio.gather(
            *(
                store.complete(r.id, envelope(r.id), intents(i), state="processed")
                for i, r in enumerate(recs[1:], start=1)
            ),
            return_exceptions=True,
        )
        assert [type(r).__name__ for r in results] == [
            "DedupConflict" if i == 4 else "NoneType" for i in range(1, 8)
        ]
        states = {m.id: m.state for m in await store.list_messages(limit=20)}
        assert states[recs[4].id] == "spooled"  # nothing of it stored
        assert all(states[r.id] == "processed" for i, r in enumerate(recs) if i != 4)
        events = await store.list_events("default", limit=50, include_acked=True)
        assert sorted(e.msg_id for e in events) == sorted(
            r.id for i, r in enumerate(recs) if i not in (0, 4)
        )


async def test_ticket_numbers_are_unique_per_tenant_across_nodes(nodes: Nodes) -> None:
    async with nodes(2) as (a, b):
        recs_a = [record(i, tenant="acme") for i in range(30)]
        recs_b = [record(i, tenant="acme") for i in range(30)]
        other = [record(i, tenant="globex") for i in range(3)]
        await asyncio.gather(
            *(a.spool(r) for r in recs_a), *(b.spool(r) for r in recs_b), a.spool(*other)
        )
        seqs = [await a.message_seq(r.id) for r in recs_a + recs_b]
        assert sorted(s for s in seqs if s is not None) == list(range(1, 61))
        assert sorted([await b.message_seq(r.id) for r in other]) == [1, 2, 3]  # type: ignore[type-var]


async def test_threads_and_tickets_are_found_from_either_node(nodes: Nodes) -> None:
    async with nodes(2) as (a, b):
        r1, r2 = record(1), record(2)
        t = ThreadIntent(
            tenant="default",
            thread_id="thr_x",
            ticket="T-1",
            is_new=True,
            message_id="<one@example.org>",
            sender="c@example.org",
        )
        await _processed(a, r1, t)
        refs = await b.find_threads("default", ["<one@example.org>"])
        assert [r.thread_id for r in refs] == ["thr_x"]
        reply = dataclasses.replace(t, is_new=False, message_id="<two@example.org>")
        await _processed(b, r2, reply)
        found = await a.find_thread_by_ticket("default", "T-1")
        assert found is not None
        assert found.thread_id == "thr_x"
        assert await a.thread_of(r2.id) == "thr_x"
        assert await a.find_threads("other", ["<one@example.org>"]) == []  # tenant-scoped


async def test_a_ticket_taken_concurrently_is_a_retry_not_a_crash(nodes: Nodes) -> None:
    async with nodes(2) as (a, b):
        r1, r2 = record(1), record(2)
        await a.spool(r1, r2)
        base = ThreadIntent(
            tenant="default",
            thread_id="thr_a",
            ticket="T-9",
            is_new=True,
            message_id=None,
            sender="c@example.org",
        )
        await a.complete(r1.id, envelope(r1.id), [base], state="processed")
        with pytest.raises(DedupConflict):  # handled by the ingest worker as "run again"
            await b.complete(
                r2.id,
                envelope(r2.id),
                [dataclasses.replace(base, thread_id="thr_b")],
                state="processed",
            )
        assert (await a.get_message_row(r2.id))["state"] == "spooled"


# ---------------------------------------------------------------------------- quarantine, audit


async def test_quarantine_and_audit_from_either_node(nodes: Nodes) -> None:
    from mailgate.store.pipeline import QuarantineIntent

    async with nodes(2) as (a, b):
        rec = record()
        await a.spool(rec)
        await a.complete(
            rec.id,
            envelope(rec.id),
            [QuarantineIntent(tenant="default", reason="virus")],
            state="quarantined",
        )
        listed = await b.list_quarantine()
        assert [q.msg_id for q in listed] == [rec.id]
        await b.release_quarantined(rec.id, envelope(rec.id), [], actor="op")
        q = await a.get_quarantine(rec.id)
        assert q.released_by == "op"
        audit = await a.list_audit(action="quarantine.release")
        assert [x.target for x in audit] == [rec.id]
        with pytest.raises(NotFound):
            await a.release_quarantined(rec.id, envelope(rec.id), [], actor="op")


async def test_store_error_when_closed(nodes: Nodes) -> None:
    async with nodes(1) as (store,):
        pass
    with pytest.raises(StoreError):
        await store.get_raw("msg_x")


# ---------------------------------------------------------------------------- reply before original


def _thread(thread_id: str, mid: str, *, is_new: bool, awaits: str | None = None) -> ThreadIntent:
    return ThreadIntent(
        tenant="default",
        thread_id=thread_id,
        ticket=None,
        is_new=is_new,
        message_id=mid,
        sender="c@example.org",
        awaits=awaits,
    )


async def test_an_original_stored_after_its_reply_joins_the_replys_thread(nodes: Nodes) -> None:
    async with nodes(2) as (a, b):
        orig, reply = record(1), record(2)
        await _processed(a, reply, _thread("thr_r", "<r@x>", is_new=True, awaits="<o@x>"))
        (ref,) = await b.find_threads("default", ["<o@x>"])
        assert (ref.thread_id, ref.awaited) == ("thr_r", True)
        await _processed(b, orig, _thread("thr_r", "<o@x>", is_new=False))
        (ref,) = await a.find_threads("default", ["<o@x>"])
        assert (ref.thread_id, ref.awaited) == ("thr_r", False)
        assert await a.thread_of(orig.id) == "thr_r"


async def test_original_and_reply_at_two_nodes_at_once_end_in_one_thread(nodes: Nodes) -> None:
    """Neither sees the other when it looks; the unique key on the original's Message-ID
    decides at commit: the loser is told to run again, and its second look finds the winner."""
    async with nodes(2) as (a, b):
        orig, reply = record(1), record(2)
        await a.spool(orig)
        await b.spool(reply)
        results = await asyncio.gather(
            a.complete(
                orig.id,
                envelope(orig.id),
                [_thread("thr_o", "<o@x>", is_new=True)],
                state="processed",
            ),
            b.complete(
                reply.id,
                envelope(reply.id),
                [_thread("thr_r", "<r@x>", is_new=True, awaits="<o@x>")],
                state="processed",
            ),
            return_exceptions=True,
        )
        assert sum(isinstance(r, DedupConflict) for r in results) == 1, results
        (ref,) = await a.find_threads("default", ["<o@x>"])
        if results[0] is None:  # the original won: the reply's rerun finds it
            assert not ref.awaited
            await b.complete(
                reply.id,
                envelope(reply.id),
                [_thread(ref.thread_id, "<r@x>", is_new=False)],
                state="processed",
            )
        else:  # the reply won: the original's rerun finds the placeholder and joins
            assert ref.awaited
            await a.complete(
                orig.id,
                envelope(orig.id),
                [_thread(ref.thread_id, "<o@x>", is_new=False)],
                state="processed",
            )
        assert await a.thread_of(orig.id) == await b.thread_of(reply.id) == ref.thread_id


async def test_a_refused_placeholder_is_taken_over_not_a_conflict(nodes: Nodes) -> None:
    async with nodes(2) as (a, b):
        bait, victim = record(1), record(2)
        await _processed(a, bait, _thread("thr_bait", "<bait@x>", is_new=True, awaits="<v@x>"))
        mine = dataclasses.replace(_thread("thr_v", "<v@x>", is_new=True), refused="thr_bait")
        await _processed(b, victim, mine)
        (ref,) = await a.find_threads("default", ["<v@x>"])
        assert (ref.thread_id, ref.awaited) == ("thr_v", False)
        assert await a.thread_of(victim.id) == "thr_v"
