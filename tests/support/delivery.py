"""Delivery test helpers: a real SqliteStore in a tmp dir, published messages, a worker.

``publish`` creates rows the way production does: ``store.spool`` (the 250) then
``store.complete`` with a ``PublishIntent`` (the pipeline's last transaction).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from mailgate.api.urls import AttachmentUrlSigner
from mailgate.config import ApiConfig, ApiToken, DeliveryConfig, WebhookConfig
from mailgate.delivery.webhook import WebhookWorker
from mailgate.envelope import new_id
from mailgate.store.base import SpoolRecord
from mailgate.store.delivery import PublishIntent
from mailgate.store.sqlite import SqliteStore

SECRET = "whsec_FJaOVz3OfAZ89vzs08yza2c+TdAULNLHr7kLwQ/gpEQ="

RAW = (
    b"From: Alice <alice@example.com>\r\nTo: support@example.test\r\n"
    b"Subject: Hello\r\nMessage-ID: <m1@example.com>\r\n\r\nHi there\r\n"
)


@contextlib.asynccontextmanager
async def open_store(data_dir: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(data_dir, group_commit_window=0.0)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def envelope_for(
    msg_id: str,
    *,
    tenant: str = "default",
    subject: str = "Hello",
    thread: str | None = None,
    attachments: list[dict[str, Any]] | None = None,
    trace_id: str = "",
) -> dict[str, Any]:
    return {
        "id": msg_id,
        "timestamp": "2026-04-23T10:32:11Z",
        "from": {"email": "alice@example.com", "name": "Alice"},
        "to": [{"email": "support@example.test", "name": ""}],
        "subject": subject,
        "text": "Hi there — ünïcödé",
        "attachments": attachments or [],
        "tenant": tenant,
        "thread": {"id": thread, "ticket": None, "isReply": False} if thread else None,
        "traceId": trace_id,
    }


async def publish(
    store: SqliteStore,
    *,
    targets: tuple[str, ...] = ("hook",),
    tenant: str = "default",
    thread: str | None = None,
    subject: str = "Hello",
    raw: bytes = RAW,
    attachments: list[dict[str, Any]] | None = None,
) -> str:
    """Spool and complete one message with a PublishIntent; returns the message id."""
    msg_id = new_id("msg")
    trace_id = "tr" + msg_id[-10:]
    await store.spool(
        SpoolRecord(
            id=msg_id,
            received_at=time.time(),
            mail_from="alice@example.com",
            rcpt_to=["support@example.test"],
            client_ip="127.0.0.1",
            helo="client.example.com",
            tls=False,
            raw=raw,
            tenant=tenant,
            trace_id=trace_id,
        )
    )
    env = envelope_for(
        msg_id,
        tenant=tenant,
        subject=subject,
        thread=thread,
        attachments=attachments,
        trace_id=trace_id,
    )
    await store.complete(
        msg_id, env, [PublishIntent(targets=targets, ordering_key=thread)], state="processed"
    )
    return msg_id


def fast_delivery(**kw: Any) -> DeliveryConfig:
    base: dict[str, Any] = {
        "retry_schedule": "0s, 100ms, 100ms, 100ms",
        "jitter": 0.0,
        "poll_interval": 0.05,
        "breaker_threshold": 1000,
        "breaker_cooldown": 0.2,
        "client_error_retries": 1,
    }
    base.update(kw)
    return DeliveryConfig(**base)


def hook(
    url: str, *, name: str = "hook", secrets: list[str] | None = None, **kw: Any
) -> WebhookConfig:
    kw.setdefault("timeout", 2.0)
    return WebhookConfig(url=url, name=name, secrets=secrets or [SECRET], **kw)


@contextlib.asynccontextmanager
async def running_worker(
    store: SqliteStore,
    webhooks: list[WebhookConfig],
    cfg: DeliveryConfig,
    data_dir: Path,
    **kw: Any,
) -> AsyncIterator[WebhookWorker]:
    """A started `WebhookWorker` (``kw``: its keyword options, e.g. ``node``), stopped after."""
    urls = AttachmentUrlSigner(ApiConfig(public_url="http://127.0.0.1:1"), data_dir)
    worker = WebhookWorker(store, webhooks, cfg, urls, **kw)
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()


async def wait_until(pred: Any, *, timeout: float = 10.0, interval: float = 0.02) -> None:
    """Poll an async predicate until true; bounded."""
    import asyncio

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await pred():
            return
        await asyncio.sleep(interval)
    raise TimeoutError("condition not reached")


@contextlib.asynccontextmanager
async def running_api(
    store: SqliteStore, data_dir: Path, cfg: ApiConfig | None = None
) -> AsyncIterator[ApiServer]:
    """The real API app on 127.0.0.1 (ephemeral port), as ``app.py`` runs it."""
    from aiohttp import web

    from mailgate.api.app import create_api
    from mailgate.app import governance_for
    from mailgate.store.blobs import BlobStore

    api_cfg = cfg or ApiConfig(tokens=[ApiToken(token=TOKEN, tenant="default", name="t1")])
    runner: web.AppRunner | None = None
    blobs = BlobStore(data_dir / "attachments")
    urls = AttachmentUrlSigner(api_cfg, data_dir)
    try:
        app = create_api(
            store,
            api_cfg,
            blobs=blobs,
            urls=urls,
            data_dir=data_dir,
            governance=governance_for(store),
        )
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        yield ApiServer(f"http://127.0.0.1:{port}", blobs, urls)
    finally:
        if runner is not None:
            await runner.cleanup()


TOKEN = "test-token-default"


@dataclasses.dataclass
class ApiServer:
    base: str
    blobs: Any
    urls: AttachmentUrlSigner

    def auth(self, token: str = TOKEN) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}
