"""End to end: SMTP in -> a signed webhook at a real receiver, and the same event in the API."""

from __future__ import annotations

import asyncio
import base64
from email.message import EmailMessage
from typing import Any

import aiohttp
import standardwebhooks

from tests.support.delivery import SECRET
from tests.support.http_receiver import HttpReceiver, Reply

API_TOKEN = "test-token-0123456789abcdef0123456789"  # tests/support/server.py BASE_TOML


def webhook_toml(url: str) -> str:
    return (
        f'[[webhooks]]\nname = "app"\nurl = "{url}"\nsecrets = ["{SECRET}"]\n'
        'tenant = "default"\n\n[delivery]\npoll_interval = "100ms"\n'
    )


def message_with_attachment(payload: bytes) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Customer <customer@example.org>"
    msg["To"] = "support@example.test"
    msg["Subject"] = "Invoice question"
    msg["Message-ID"] = "<e2e-1@example.org>"
    msg.set_content("Hello, see the attached invoice.\n")
    msg.add_attachment(payload, maintype="application", subtype="pdf", filename="invoice.pdf")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


async def test_smtp_message_reaches_the_webhook_and_the_api(mailgate_server: Any) -> None:
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 4
    raw = message_with_attachment(pdf)
    async with HttpReceiver() as rx:
        srv = await asyncio.to_thread(mailgate_server, extra_toml=webhook_toml(rx.url()))
        await asyncio.to_thread(srv.send, raw)
        (req,) = await rx.wait_for(1, timeout=30)
        payload = standardwebhooks.Webhook(SECRET).verify(req.body, req.headers)
        assert payload["subject"] == "Invoice question"
        assert req.header("webhook-id") == "evt_" + payload["id"].split("_", 1)[1]
        assert req.header("x-mailgate-trace-id")
        msg_id = payload["id"]
        auth = {"Authorization": f"Bearer {API_TOKEN}"}
        async with aiohttp.ClientSession() as http:

            async def detail() -> dict[str, Any]:
                async with http.get(f"{srv.api_base}/v1/messages/{msg_id}", headers=auth) as r:
                    assert r.status == 200
                    body: dict[str, Any] = await r.json()
                    return body

            for _ in range(100):  # the worker records the 2xx right after the receiver answers
                got = await detail()
                if got["acked"]:
                    break
                await asyncio.sleep(0.05)
            assert got["eventId"] == req.header("webhook-id")
            assert got["ackedBy"] == "webhook:app"
            assert got["deliveries"][0]["state"] == "delivered"
            async with http.get(f"{srv.api_base}/v1/messages/{msg_id}/raw", headers=auth) as r:
                assert await r.read() == raw
            # the attachment URL in the webhook payload works, and is refused once altered
            (att,) = [a for a in payload["attachments"] if a.get("filename") == "invoice.pdf"]
            path = att["url"][len("http://127.0.0.1:8025") :]
            async with http.get(srv.api_base + path) as r:
                assert r.status == 200 and await r.read() == pdf
            async with http.get(srv.api_base + path.replace("sig=", "sig=x")) as r:
                assert r.status == 403
            # consumed by the webhook: not offered again by the polling list
            async with http.get(f"{srv.api_base}/v1/messages", headers=auth) as r:
                assert [m["id"] for m in (await r.json())["data"]] == []
            # the front serves /metrics; parsing and delivery happened in the worker process
            for _ in range(100):  # bounded: workers publish their figures every 2 s
                async with http.get(f"{srv.api_base}/metrics") as r:
                    text = await r.text()
                if "mailgate_parse_seconds_count 1.0" in text:
                    break
                await asyncio.sleep(0.1)
            assert 'mailgate_webhook_deliveries_total{outcome="delivered",target="app"} 1.0' in text
            assert "mailgate_accept_to_delivered_seconds_count 1.0" in text
            assert "mailgate_parse_seconds_count 1.0" in text  # from the worker process
            assert "mailgate_smtp_accepted_messages_total 1.0" in text  # from the front
            assert 'mailgate_ingest_processed_total{outcome="processed"} 1.0' in text
        assert base64.b64decode(req.header("webhook-signature").split(",", 1)[1])  # type: ignore[union-attr]
        await asyncio.to_thread(srv.stop)


async def test_a_killed_server_delivers_after_restart_with_the_same_id(
    mailgate_server: Any,
) -> None:
    async with HttpReceiver() as rx:
        rx.script(Reply(200, delay=300))  # the first attempt hangs past the test
        srv = await asyncio.to_thread(mailgate_server, extra_toml=webhook_toml(rx.url()))
        await asyncio.to_thread(
            srv.send,
            b"From: a@example.org\r\nTo: support@example.test\r\nSubject: crash\r\n\r\nhi\r\n",
        )
        for _ in range(400):  # bounded: until the attempt is in flight
            if rx.inflight:
                break
            await asyncio.sleep(0.05)
        assert rx.inflight == 1
        await asyncio.to_thread(srv.kill)
        await asyncio.to_thread(srv.start)
        (redelivered,) = await rx.wait_for(1, where=lambda r: r.status == 200, timeout=30)
        payload = standardwebhooks.Webhook(SECRET).verify(redelivered.body, redelivered.headers)
        assert payload["subject"] == "crash"
        assert redelivered.header("webhook-id") == "evt_" + payload["id"].split("_", 1)[1]
        await asyncio.to_thread(srv.stop)


async def test_dlq_and_410_operated_through_the_cli(mailgate_server: Any) -> None:
    import json

    async def cli_json(srv: Any, *args: str) -> Any:
        result = await asyncio.to_thread(srv.cli, *args)
        return json.loads(result.stdout)

    raw = b"From: a@example.org\r\nTo: support@example.test\r\nSubject: %s\r\n\r\nhi\r\n"
    async with HttpReceiver() as rx:
        rx.default = Reply(500)
        toml = webhook_toml(rx.url()) + 'retry_schedule = "0s, 100ms"\n'
        srv = await asyncio.to_thread(mailgate_server, extra_toml=toml)
        await asyncio.to_thread(srv.send, raw % b"first")
        for _ in range(100):  # bounded: until both attempts failed
            dead = await cli_json(srv, "dlq", "list", "--json")
            if dead:
                break
            await asyncio.sleep(0.1)
        assert [d["target"] for d in dead] == ["app"] and dead[0]["attempts"] == 2
        rx.default = Reply(200)
        await asyncio.to_thread(srv.cli, "dlq", "retry", "--all")
        (ok,) = await rx.wait_for(1, where=lambda r: r.status == 200, timeout=30)
        assert ok.header("webhook-id") == dead[0]["eventId"]

        rx.default = Reply(410)
        await asyncio.to_thread(srv.send, raw % b"second")
        for _ in range(100):
            disabled = (await cli_json(srv, "dlq", "targets", "--json"))["disabled"]
            if disabled:
                break
            await asyncio.sleep(0.1)
        assert list(disabled) == ["app"]
        rx.default = Reply(200)
        await asyncio.to_thread(srv.cli, "dlq", "enable-target", "app")
        await rx.wait_for(2, where=lambda r: r.status == 200, timeout=30)
        assert rx.successful()[-1].json()["subject"] == "second"
        await asyncio.to_thread(srv.stop)
