"""The polling API over a real socket: auth, tenants, paging, ack, raw bytes, signed URLs."""

from __future__ import annotations

import hashlib
import os
import stat
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from mailgate.config import ApiConfig, ApiToken
from mailgate.store.delivery import event_id_for
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

OTHER = "token-of-acme"
TWO_TENANTS = ApiConfig(
    tokens=[
        ApiToken(token=TOKEN, tenant="default", name="t1"),
        ApiToken(token_sha256=hashlib.sha256(OTHER.encode()).hexdigest(), tenant="acme"),
    ]
)


@pytest.fixture
async def http():  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as session:
        yield session


async def test_401_without_or_with_a_wrong_token(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with open_store(tmp_path) as store, running_api(store, tmp_path) as api:
        msg_id = await publish(store)
        for headers in (
            {},
            {"Authorization": "Bearer nope"},
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": "Bearer "},
        ):
            for method, path in (
                ("GET", "/v1/messages"),
                ("GET", f"/v1/messages/{msg_id}"),
                ("GET", f"/v1/messages/{msg_id}/raw"),
                ("POST", f"/v1/messages/{msg_id}/ack"),
            ):
                async with http.request(method, api.base + path, headers=headers) as r:
                    assert r.status == 401, (headers, path)
                    assert r.headers["WWW-Authenticate"].startswith("Bearer")
                    assert (await r.json())["error"]["code"] == "unauthorized"
        # nothing was acknowledged by the refused requests
        async with http.get(api.base + "/v1/messages", headers=api.auth()) as r:
            assert [m["id"] for m in (await r.json())["data"]] == [msg_id]


async def test_tenant_isolation(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with open_store(tmp_path) as store, running_api(store, tmp_path, TWO_TENANTS) as api:
        mine = await publish(store, tenant="default")
        theirs = await publish(store, tenant="acme")
        async with http.get(api.base + "/v1/messages", headers=api.auth()) as r:
            assert [m["id"] for m in (await r.json())["data"]] == [mine]
        async with http.get(api.base + "/v1/messages", headers=api.auth(OTHER)) as r:
            assert [m["id"] for m in (await r.json())["data"]] == [theirs]
        for method, path in (
            ("GET", f"/v1/messages/{theirs}"),
            ("GET", f"/v1/messages/{event_id_for(theirs)}"),
            ("GET", f"/v1/messages/{theirs}/raw"),
            ("POST", f"/v1/messages/{theirs}/ack"),
        ):
            async with http.request(method, api.base + path, headers=api.auth()) as r:
                assert r.status == 404, path
        async with http.get(api.base + "/v1/messages", headers=api.auth(OTHER)) as r:
            assert [m["acked"] for m in (await r.json())["data"]] == [False]


async def test_cursor_paging_over_several_pages(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with open_store(tmp_path) as store, running_api(store, tmp_path) as api:
        ids = [await publish(store, subject=f"n{i}") for i in range(7)]
        seen: list[str] = []
        pages = []
        cursor = ""
        for _ in range(10):  # bounded
            url = f"{api.base}/v1/messages?limit=3" + (f"&cursor={cursor}" if cursor else "")
            async with http.get(url, headers=api.auth()) as r:
                assert r.status == 200
                body = await r.json()
            seen.extend(m["id"] for m in body["data"])
            pages.append((len(body["data"]), body["has_more"]))
            cursor = body["next_cursor"]
            if not body["has_more"]:
                break
        assert seen == ids
        assert pages == [(3, True), (3, True), (1, False)]
        # the last cursor returns nothing new until more arrives, then exactly that
        later = await publish(store)
        async with http.get(f"{api.base}/v1/messages?cursor={cursor}", headers=api.auth()) as r:
            body = await r.json()
        assert [m["id"] for m in body["data"]] == [later]
        for bad in ("?limit=0", "?limit=501", "?limit=x", "?cursor=abc"):
            async with http.get(api.base + "/v1/messages" + bad, headers=api.auth()) as r:
                assert r.status == 400, bad


async def test_ack_is_idempotent_and_hides_the_event(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with open_store(tmp_path) as store, running_api(store, tmp_path) as api:
        first = await publish(store)
        second = await publish(store)
        url = f"{api.base}/v1/messages/{first}/ack"
        async with http.post(url, headers=api.auth()) as r:
            assert r.status == 200
            one = await r.json()
        async with http.post(url, headers=api.auth()) as r:
            assert r.status == 200
            two = await r.json()
        assert one == two and one["acked"] is True and one["ackedBy"] == "api:t1"
        # by event id as well: same event, same answer
        async with http.post(
            f"{api.base}/v1/messages/{event_id_for(first)}/ack", headers=api.auth()
        ) as r:
            assert (await r.json())["ackedAt"] == one["ackedAt"]
        async with http.get(api.base + "/v1/messages", headers=api.auth()) as r:
            assert [m["id"] for m in (await r.json())["data"]] == [second]
        async with http.get(f"{api.base}/v1/messages/{first}", headers=api.auth()) as r:
            detail = await r.json()
        assert detail["acked"] is True and detail["eventId"] == event_id_for(first)
        async with http.post(f"{api.base}/v1/messages/msg_nope/ack", headers=api.auth()) as r:
            assert r.status == 404


async def test_raw_bytes_are_identical(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    raw = (
        b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.com>\r\nTo: support@example.test\r\n"
        b"Subject: raw\r\nContent-Type: text/plain; charset=latin-1\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\nGr\xfc\xdfe\r\nbare lf\nend\r\n.\r\n"
        + os.urandom(64)
    )
    async with open_store(tmp_path) as store, running_api(store, tmp_path) as api:
        msg_id = await publish(store, raw=raw)
        async with http.get(f"{api.base}/v1/messages/{msg_id}/raw", headers=api.auth()) as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "message/rfc822"
            assert await r.read() == raw


async def test_signed_attachment_url_valid_expired_tampered(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    data = b"%PDF-1.4 fake pdf bytes\x00\x01"
    async with open_store(tmp_path) as store, running_api(store, tmp_path) as api:
        sha = api.blobs.put(data)
        att = {
            "id": "att_01TEST",
            "filename": "Rechnung ü.pdf",
            "contentType": "application/pdf",
            "size": len(data),
            "sha256": sha,
            "disposition": "attachment",
            "url": None,
        }
        msg_id = await publish(store, attachments=[att])
        async with http.get(f"{api.base}/v1/messages/{msg_id}", headers=api.auth()) as r:
            url = (await r.json())["envelope"]["attachments"][0]["url"]
        assert url.startswith("http://127.0.0.1:8025/v1/attachments/att_01TEST?")
        local = api.base + url[len("http://127.0.0.1:8025") :]
        async with http.get(local) as r:  # no bearer token needed
            assert r.status == 200
            assert await r.read() == data
            assert r.headers["Content-Type"] == "application/pdf"
            assert "filename*=UTF-8''Rechnung%20%C3%BC.pdf" in r.headers["Content-Disposition"]
            assert r.headers["X-Content-Type-Options"] == "nosniff"
        q = parse_qs(urlsplit(local).query)
        expires, sig = q["expires"][0], q["sig"][0]
        base = f"{api.base}/v1/attachments"
        flipped = sig[:-1] + ("A" if sig[-1] != "A" else "B")
        for bad in (
            f"{base}/att_01TEST?expires={expires}&sig={flipped}",  # altered signature
            f"{base}/att_01TEST?expires={int(expires) + 1}&sig={sig}",  # altered expiry
            f"{base}/att_01OTHER?expires={expires}&sig={sig}",  # another attachment
            f"{base}/att_01TEST?sig={sig}",
            f"{base}/att_01TEST",
        ):
            async with http.get(bad) as r:
                assert r.status == 403, bad
        expired = api.urls.url("att_01TEST", expires=int(time.time()) - 5)
        async with http.get(api.base + expired[len("http://127.0.0.1:8025") :]) as r:
            assert r.status == 403
        # a valid signature for an id with no attachment is a 404, not a leak
        ghost = api.urls.url("att_ghost")
        async with http.get(api.base + ghost[len("http://127.0.0.1:8025") :]) as r:
            assert r.status == 404


async def test_webhook_delivery_is_visible_in_the_api(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with HttpReceiver() as rx, open_store(tmp_path) as store:
        msg_id = await publish(store)
        async with running_api(store, tmp_path) as api:
            async with http.get(api.base + "/v1/messages", headers=api.auth()) as r:
                listed = (await r.json())["data"]
            assert [m["eventId"] for m in listed] == [event_id_for(msg_id)]
            async with running_worker(store, [hook(rx.url())], fast_delivery(), tmp_path):
                (req,) = await rx.wait_for(1)

                async def consumed() -> bool:
                    return (await store.outbox_stats()).pending == 0

                await wait_until(consumed)
            assert req.header("webhook-id") == listed[0]["eventId"]
            async with http.get(api.base + "/v1/messages", headers=api.auth()) as r:
                assert (await r.json())["data"] == []
            async with http.get(f"{api.base}/v1/messages/{msg_id}", headers=api.auth()) as r:
                detail = await r.json()
            assert detail["acked"] is True and detail["ackedBy"] == "webhook:hook"
            assert detail["deliveries"][0]["state"] == "delivered"
            assert detail["deliveries"][0]["attempts"] == 1


async def test_generated_token_when_none_is_configured(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with open_store(tmp_path) as store, running_api(store, tmp_path, ApiConfig()) as api:
        path = tmp_path / "keys" / "api-token"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        token = path.read_text().strip()
        msg_id = await publish(store)
        async with http.get(api.base + "/v1/messages", headers=api.auth(token)) as r:
            assert [m["id"] for m in (await r.json())["data"]] == [msg_id]
        async with http.get(api.base + "/v1/messages", headers=api.auth(TOKEN)) as r:
            assert r.status == 401
    # a restart keeps the same token
    async with (
        open_store(tmp_path) as store,
        running_api(store, tmp_path, ApiConfig()) as api,
        http.get(api.base + "/v1/messages", headers=api.auth(token)) as r,
    ):
        assert r.status == 200
    assert stat.S_IMODE((tmp_path / "keys" / "url-signing.key").stat().st_mode) == 0o600
