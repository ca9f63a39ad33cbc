"""/healthz, /readyz, /metrics and /openapi.json over a real socket."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from mailgate.config import ApiConfig, ApiToken
from tests.support.delivery import (
    TOKEN,
    fast_delivery,
    hook,
    open_store,
    publish,
    running_api,
    running_worker,
    wait_until,
)
from tests.support.http_receiver import HttpReceiver


def cfg(**kw: object) -> ApiConfig:
    return ApiConfig(tokens=[ApiToken(token=TOKEN)], **kw)  # type: ignore[arg-type]


async def test_healthz_and_readyz(tmp_path: Path) -> None:
    async with (
        open_store(tmp_path) as store,
        running_api(store, tmp_path) as api,
        aiohttp.ClientSession() as http,
    ):
        async with http.get(api.base + "/healthz") as r:
            assert r.status == 200 and (await r.json())["status"] == "ok"
        async with http.get(api.base + "/readyz") as r:
            body = await r.json()
            assert r.status == 200, body
            assert body["checks"]["store"]["ok"] and body["checks"]["outbox"]["ok"]


async def test_readyz_fails_on_low_disk(tmp_path: Path) -> None:
    async with (
        open_store(tmp_path) as store,
        running_api(store, tmp_path, cfg(readyz_min_free_disk=2**62)) as api,
        aiohttp.ClientSession() as http,
        http.get(api.base + "/readyz") as r,
    ):
        body = await r.json()
        assert r.status == 503 and body["checks"]["disk"]["ok"] is False


async def test_readyz_fails_when_the_outbox_is_stuck(tmp_path: Path) -> None:
    async with (
        open_store(tmp_path) as store,
        running_api(store, tmp_path, cfg(readyz_max_outbox_lag=0.0)) as api,
        aiohttp.ClientSession() as http,
    ):
        await publish(store, targets=("nobody-delivers-this",))

        async def not_ready() -> bool:
            async with http.get(api.base + "/readyz") as r:
                return r.status == 503 and not (await r.json())["checks"]["outbox"]["ok"]

        await wait_until(not_ready)
        # a target an operator (or a 410) disabled does not count as stuck
        await store.disable_target("nobody-delivers-this", "test")
        async with http.get(api.base + "/readyz") as r:
            assert r.status == 200


async def test_metrics_show_deliveries_dlq_and_lag(tmp_path: Path) -> None:
    async with (
        HttpReceiver() as rx,
        open_store(tmp_path) as store,
        running_api(store, tmp_path) as api,
        aiohttp.ClientSession() as http,
    ):
        await publish(store, targets=("metrics-hook",))
        worker_cfg = fast_delivery()
        async with running_worker(
            store, [hook(rx.url(), name="metrics-hook")], worker_cfg, tmp_path
        ):
            await rx.wait_for(1)

            async def settled() -> bool:
                return (await store.outbox_stats()).pending == 0

            await wait_until(settled)
        async with http.get(api.base + "/metrics") as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain")
            text = await r.text()
    assert (
        'mailgate_webhook_deliveries_total{outcome="delivered",target="metrics-hook"} 1.0' in text
    )
    assert 'mailgate_webhook_attempt_seconds_count{target="metrics-hook"} 1.0' in text
    assert 'mailgate_accept_to_delivered_seconds_bucket{le="+Inf"} 1.0' in text
    assert "mailgate_accept_to_delivered_seconds_count 1.0" in text
    assert "mailgate_dlq_depth 0.0" in text
    assert "mailgate_outbox_lag_seconds 0.0" in text
    assert "mailgate_smtp_sessions_total" in text  # the shared registry


async def test_openapi_document_is_served(tmp_path: Path) -> None:
    async with (
        open_store(tmp_path) as store,
        running_api(store, tmp_path) as api,
        aiohttp.ClientSession() as http,
        http.get(api.base + "/openapi.json") as r,
    ):
        doc = await r.json()
    assert doc["openapi"].startswith("3.")
    assert {
        "/v1/messages",
        "/v1/messages/{id}",
        "/v1/messages/{id}/ack",
        "/v1/messages/{id}/raw",
        "/v1/attachments/{id}",
        "/healthz",
        "/readyz",
        "/metrics",
    } <= set(doc["paths"])


async def test_unknown_routes_answer_json(tmp_path: Path) -> None:
    async with (
        open_store(tmp_path) as store,
        running_api(store, tmp_path) as api,
        aiohttp.ClientSession() as http,
    ):
        async with http.get(api.base + "/nope") as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
        async with http.delete(api.base + "/healthz") as r:
            assert r.status == 405 and "GET" in r.headers["Allow"]
