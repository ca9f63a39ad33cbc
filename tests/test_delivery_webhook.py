"""The webhook worker against a real HTTP receiver on loopback and a real SQLite store."""

from __future__ import annotations

import asyncio
import base64
import random
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks
from aiohttp import web

from mailgate.store.delivery import event_id_for
from mailgate.store.sqlite import SqliteStore
from tests.support.delivery import (
    SECRET,
    fast_delivery,
    hook,
    open_store,
    publish,
    running_worker,
    wait_until,
)
from tests.support.http_receiver import HttpReceiver, Received, Reply


async def attempts_of(store, target: str = "hook") -> int:  # type: ignore[no-untyped-def]
    row = await store._read_one(
        "SELECT COUNT(*) FROM delivery_attempts a JOIN outbox o ON o.id = a.outbox_id"
        " WHERE o.target = ?",
        (target,),
    )
    return int(row[0])


@pytest.fixture
async def rx():  # type: ignore[no-untyped-def]
    receiver = HttpReceiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


def verify(req: Received, secret: str | bytes = SECRET) -> object:
    """Verify with the independent ``standardwebhooks`` implementation."""
    return standardwebhooks.Webhook(secret).verify(req.body, req.headers)


async def test_signature_verifies_with_standardwebhooks(tmp_path: Path, rx: HttpReceiver) -> None:
    new_secret = "whsec_" + base64.b64encode(b"rotated-secret-32-bytes-long!!!!").decode()
    async with open_store(tmp_path) as store:
        msg_id = await publish(store)
        webhooks = [hook(rx.url(), secrets=[new_secret, SECRET])]
        async with running_worker(store, webhooks, fast_delivery(), tmp_path):
            (req,) = await rx.wait_for(1)
    payload = verify(req)  # the old secret still verifies during a rotation
    assert verify(req, new_secret) == payload
    assert isinstance(payload, dict) and payload["id"] == msg_id
    assert payload["text"] == "Hi there — ünïcödé"
    assert req.header("webhook-id") == event_id_for(msg_id)
    assert req.header("content-type") == "application/json"
    assert req.header("x-mailgate-trace-id") == "tr" + msg_id[-10:]
    assert len(req.header("webhook-signature").split(" ")) == 2  # type: ignore[union-attr]
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook("whsec_" + base64.b64encode(b"x" * 24).decode()).verify(
            req.body, req.headers
        )
    tampered = req.body.replace(b"Hello", b"Hellp")
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        verify(Received(req.method, req.path, req.headers, tampered, req.at, req.status))


async def test_unprefixed_secret_is_used_as_raw_bytes(tmp_path: Path, rx: HttpReceiver) -> None:
    async with open_store(tmp_path) as store:
        await publish(store)
        async with running_worker(
            store, [hook(rx.url(), secrets=["plain-secret"])], fast_delivery(), tmp_path
        ):
            (req,) = await rx.wait_for(1)
    assert verify(req, b"plain-secret")


async def test_receiver_down_then_up_loses_nothing(tmp_path: Path, rx: HttpReceiver) -> None:
    await rx.down()
    cfg = fast_delivery(retry_schedule="0s, 100ms*100")
    async with open_store(tmp_path) as store:
        ids = [await publish(store, thread=f"thr_{i % 2}") for i in range(6)]
        async with running_worker(store, [hook(rx.url())], cfg, tmp_path):

            async def failed_a_few() -> bool:
                return await attempts_of(store) >= 4

            await wait_until(failed_a_few)
            await rx.up()
            await rx.wait_for(6, where=lambda r: r.status == 200)
            await wait_until(lambda: _settled(store))
        got = [r.header("webhook-id") for r in rx.successful()]
        assert sorted(got) == sorted(event_id_for(m) for m in ids)  # each once, same ids
        for r in rx.successful():
            verify(r)
        stats = await store.outbox_stats()
        assert stats.pending == 0 and stats.dead == 0


async def _settled(store) -> bool:  # type: ignore[no-untyped-def]
    return (await store.outbox_stats()).pending == 0


async def test_500s_are_retried_with_the_same_event_id(tmp_path: Path, rx: HttpReceiver) -> None:
    rx.script(Reply(500), Reply(502), Reply(503))
    async with open_store(tmp_path) as store:
        msg_id = await publish(store)
        async with running_worker(store, [hook(rx.url())], fast_delivery(), tmp_path):
            reqs = await rx.wait_for(4)
            await wait_until(lambda: _settled(store))
        assert [r.status for r in reqs] == [500, 502, 503, 200]
        assert {r.header("webhook-id") for r in reqs} == {event_id_for(msg_id)}
        for r in reqs:
            verify(r)
        ev = await store.get_event("default", msg_id)
        assert ev.deliveries[0]["attempts"] == 4 and ev.deliveries[0]["state"] == "delivered"


async def test_429_retry_after_is_honoured(tmp_path: Path, rx: HttpReceiver) -> None:
    # the schedule alone would wait an hour before the second attempt
    rx.script(Reply(429, headers={"Retry-After": "1"}))
    async with open_store(tmp_path) as store:
        await publish(store)
        cfg = fast_delivery(retry_schedule="0s, 1h")
        async with running_worker(store, [hook(rx.url())], cfg, tmp_path):
            first, second = await rx.wait_for(2, timeout=15)
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 0.9  # not before the receiver said it is ready


async def test_dlq_after_the_last_attempt_then_retry_delivers(
    tmp_path: Path, rx: HttpReceiver
) -> None:
    rx.default = Reply(500, body=b"down for maintenance")
    async with open_store(tmp_path) as store:
        msg_id = await publish(store)
        cfg = fast_delivery(retry_schedule="0s, 50ms, 50ms")
        async with running_worker(store, [hook(rx.url())], cfg, tmp_path) as worker:

            async def dead() -> bool:
                return len(await store.dlq_list()) == 1

            await wait_until(dead)
            assert len(rx.requests) == 3
            (entry,) = await store.dlq_list()
            shown = await store.dlq_get(entry.id)
            assert [h["status"] for h in shown.history] == [500, 500, 500]
            assert all(h["latency"] >= 0 for h in shown.history)
            assert "down for maintenance" in (shown.last_error or "")
            assert shown.event_id == event_id_for(msg_id)

            rx.default = Reply(200)
            assert await store.dlq_retry([entry.id]) == 1
            worker.wake()
            await rx.wait_for(1, where=lambda r: r.status == 200)
            await wait_until(lambda: _settled(store))
        assert await store.dlq_list() == []
        assert rx.requests[-1].header("webhook-id") == event_id_for(msg_id)


async def test_other_4xx_fail_to_the_dlq_after_a_short_retry(
    tmp_path: Path, rx: HttpReceiver
) -> None:
    rx.default = Reply(400)
    async with open_store(tmp_path) as store:
        await publish(store)
        cfg = fast_delivery(retry_schedule="0s, 50ms*20", client_error_retries=1)
        async with running_worker(store, [hook(rx.url())], cfg, tmp_path):

            async def dead() -> bool:
                return len(await store.dlq_list()) == 1

            await wait_until(dead)
        assert len(rx.requests) == 2


async def test_redirects_are_not_followed(tmp_path: Path, rx: HttpReceiver) -> None:
    rx.default = Reply(307, headers={"Location": rx.url("/elsewhere")})
    async with open_store(tmp_path) as store:
        await publish(store)
        cfg = fast_delivery(client_error_retries=0)
        async with running_worker(store, [hook(rx.url())], cfg, tmp_path):

            async def dead() -> bool:
                return len(await store.dlq_list()) == 1

            await wait_until(dead)
        assert [r.path for r in rx.requests] == ["/hook"]
        (entry,) = await store.dlq_list()
        assert "not followed" in (entry.last_error or "")


async def test_410_disables_the_target_until_re_enabled(tmp_path: Path, rx: HttpReceiver) -> None:
    rx.script(Reply(410))
    async with open_store(tmp_path) as store:
        first = await publish(store)
        async with running_worker(store, [hook(rx.url())], fast_delivery(), tmp_path) as worker:

            async def disabled() -> bool:
                return "hook" in await store.disabled_targets()

            await wait_until(disabled)
            second = await publish(store)
            stats = await store.outbox_stats()
            assert stats.pending == 2 and stats.dead == 0
            assert len(rx.requests) == 1
            assert await store.enable_target("hook")
            worker.wake()
            await rx.wait_for(2, where=lambda r: r.status == 200)
            await wait_until(lambda: _settled(store))
        ids = [r.header("webhook-id") for r in rx.successful()]
        assert ids == [event_id_for(first), event_id_for(second)]


def _jittery(seed: int, max_delay: float) -> Any:
    """A slow, sometimes failing receiver (a 503 one time in five): a naive parallel sender
    would reorder a thread's events."""
    rng = random.Random(seed)

    async def handler(request: web.Request, body: bytes) -> Reply:
        if rng.random() < 0.2:
            return Reply(503)
        return Reply(200, delay=rng.random() * max_delay)

    return handler


async def _publish_threads(
    store: SqliteStore, threads: tuple[str, ...], rounds: int
) -> dict[str, list[str]]:
    """``rounds`` events on each thread, interleaved; thread -> its event ids in order."""
    sent: dict[str, list[str]] = {}
    for i in range(rounds):
        for t in threads:
            msg_id = await publish(store, thread=t, subject=f"{t} #{i}")
            sent.setdefault(t, []).append(event_id_for(msg_id))
    return sent


def _in_thread_order(ok: list[Received], sent: dict[str, list[str]]) -> None:
    """Each thread's successful deliveries arrived in the order its events were published."""
    delivered = [(r.json()["thread"]["id"], r.header("webhook-id")) for r in ok]
    for thread, ids in sent.items():
        assert [e for t, e in delivered if t == thread] == ids


async def test_per_thread_order_under_concurrency(tmp_path: Path, rx: HttpReceiver) -> None:
    rx.handler = _jittery(7, 0.03)
    async with open_store(tmp_path) as store:
        sent = await _publish_threads(store, ("thr_a", "thr_b", "thr_c", "thr_d"), 10)
        cfg = fast_delivery(retry_schedule="0s, 20ms*50")
        async with running_worker(store, [hook(rx.url(), max_concurrency=8)], cfg, tmp_path):
            await rx.wait_for(40, where=lambda r: r.status == 200, timeout=30)
            await wait_until(lambda: _settled(store))
    _in_thread_order(rx.successful(), sent)
    assert rx.max_inflight > 1  # different threads did go in parallel


async def test_circuit_breaker_stops_hammering_a_dead_target(
    tmp_path: Path, rx: HttpReceiver
) -> None:
    dead_url = "http://127.0.0.1:9/never"  # discard port: nothing listens
    cfg = fast_delivery(retry_schedule="0s, 10ms*100", breaker_threshold=2, breaker_cooldown=3600.0)
    async with open_store(tmp_path) as store:
        for _ in range(5):
            await publish(store, targets=("dead", "live"))
        webhooks = [
            hook(dead_url, name="dead", max_concurrency=1),
            hook(rx.url(), name="live"),
        ]
        async with running_worker(store, webhooks, cfg, tmp_path):
            await rx.wait_for(5)

            async def tripped() -> bool:
                return await attempts_of(store, "dead") >= 2

            await wait_until(tripped)
            await asyncio.sleep(0.3)  # retries are due every 10 ms: the open breaker holds them
            assert await attempts_of(store, "dead") == 2


async def test_stop_ends_in_flight_attempts_and_releases_them(
    tmp_path: Path, rx: HttpReceiver
) -> None:
    rx.default = Reply(200, delay=30)
    async with open_store(tmp_path) as store:
        await publish(store)
        slow = hook(rx.url(), timeout=60.0)
        async with running_worker(store, [slow], fast_delivery(), tmp_path):

            async def in_flight() -> bool:
                return rx.inflight == 1

            await wait_until(in_flight)
        # the attempt was cut short: the row is pending again and free for the next start
        items = await store.claim_outbox("hook", 5, owner="next", lease=10)
        assert len(items) == 1


async def test_events_acked_through_the_api_are_not_pushed(
    tmp_path: Path, rx: HttpReceiver
) -> None:
    async with open_store(tmp_path) as store:
        acked = await publish(store)
        await store.ack_event("default", acked, by="api:test")
        kept = await publish(store)
        async with running_worker(store, [hook(rx.url())], fast_delivery(), tmp_path):
            await rx.wait_for(1)
            await wait_until(lambda: _settled(store))
        assert [r.header("webhook-id") for r in rx.requests] == [event_id_for(kept)]


async def test_leases_of_a_crashed_worker_are_recovered_at_start(
    tmp_path: Path, rx: HttpReceiver
) -> None:
    import socket
    import subprocess
    import sys

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_owner = f"{socket.gethostname()}:{int(gone.stdout)}:deadbeef"
    async with open_store(tmp_path) as store:
        msg_id = await publish(store)
        # a worker that claimed the row and was SIGKILLed: its lease would hold for 5 minutes
        assert len(await store.claim_outbox("hook", 1, owner=dead_owner, lease=300)) == 1
        async with running_worker(store, [hook(rx.url())], fast_delivery(), tmp_path):
            (req,) = await rx.wait_for(1)
        assert req.header("webhook-id") == event_id_for(msg_id)


async def test_events_committed_by_another_process_leave_without_a_full_poll(
    tmp_path: Path, rx: HttpReceiver
) -> None:
    from mailgate.store.sqlite_delivery import remove_outbox_waker

    cfg = fast_delivery(poll_interval=3600.0)  # a full poll would never come in this test
    async with open_store(tmp_path) as store:
        async with running_worker(store, [hook(rx.url())], cfg, tmp_path) as worker:
            await asyncio.sleep(0.1)  # the dispatcher is idle now
            # as if an ingest worker in another process published: no in-process wake-up
            remove_outbox_waker(worker._waker)
            msg_id = await publish(store)
            (req,) = await rx.wait_for(1, timeout=10)
        assert req.header("webhook-id") == event_id_for(msg_id)


async def test_a_backlog_worker_wakes_for_its_own_events_only(
    tmp_path: Path, rx: HttpReceiver
) -> None:
    """Workers after the first (``follow_others=False``) do not watch other processes'
    commits: an event published elsewhere waits for the first worker (or a full poll), and
    the backlog worker's own processed mail (``notify``, its ingest worker's hook) leaves now."""
    from mailgate.store.sqlite_delivery import remove_outbox_waker

    cfg = fast_delivery(poll_interval=3600.0)  # a full poll would never come in this test
    async with open_store(tmp_path) as store:
        async with running_worker(
            store, [hook(rx.url())], cfg, tmp_path, follow_others=False
        ) as worker:
            await asyncio.sleep(0.1)  # the dispatcher is idle now
            remove_outbox_waker(worker._waker)  # as if published by another process
            msg_id = await publish(store)
            await asyncio.sleep(0.5)  # ten change checks of a following worker
            assert rx.requests == []
            worker.notify()
            (req,) = await rx.wait_for(1, timeout=10)
        assert req.header("webhook-id") == event_id_for(msg_id)


async def test_two_workers_share_deliveries_in_per_thread_order(
    tmp_path: Path, rx: HttpReceiver
) -> None:
    """Every ingest worker process runs a webhook worker on the one store: each event is
    delivered once, by either, and a thread's events still arrive in order (an earlier row of
    the thread holds the later ones back while it is pending anywhere)."""
    rx.handler = _jittery(3, 0.02)
    cfg = fast_delivery(retry_schedule="0s, 20ms*50")
    async with open_store(tmp_path) as one, open_store(tmp_path) as two:
        sent = await _publish_threads(one, ("thr_a", "thr_b", "thr_c"), 12)
        # one target ("hook"), reached on a path per worker to tell who delivered what; the
        # backlog worker starts first (woken as after mail it processed), the first joins
        async with running_worker(
            two,
            [hook(rx.url("/b"), max_concurrency=4)],
            cfg,
            tmp_path,
            node="b",
            follow_others=False,
        ) as other:
            other.notify()
            await rx.wait_for(1, where=lambda r: r.status == 200, timeout=30)
            async with running_worker(
                one, [hook(rx.url("/a"), max_concurrency=4)], cfg, tmp_path, node="a"
            ) as first:
                assert first.owner != other.owner
                await rx.wait_for(36, where=lambda r: r.status == 200, timeout=30)
                await wait_until(lambda: _settled(one))
    ok = rx.successful()
    assert "/b" in {r.path for r in ok}
    got = sorted(r.header("webhook-id") or "" for r in ok)
    assert got == sorted(e for ids in sent.values() for e in ids)  # each once
    _in_thread_order(ok, sent)


async def test_a_worker_without_targets_starts_and_stops(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        await publish(store, targets=())
        async with running_worker(store, [], fast_delivery(), tmp_path) as worker:
            assert worker._task is None
        assert [e.id for e in await store.list_events("default")]  # still pollable
