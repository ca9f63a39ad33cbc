"""Helpers for pipeline tests: hand-built envelopes, a real SQLite store, one-message ingest.

``ingest(store, runner, env)`` does what the ingest worker does for one message (spool the
row, run the pipeline, ``store.complete`` with the outcome) without SMTP or MIME, so pipeline
tests can drive threading, dedup and quarantine through the real store and appliers.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mailgate.config import Config, PipelineConfig, WebhookConfig
from mailgate.envelope import new_id
from mailgate.pipeline.runner import Outcome, PipelineRunner
from mailgate.store.base import SpoolRecord
from mailgate.store.sqlite import SqliteStore


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def make_env(
    *,
    subject: str = "Hello",
    text: str = "Hi there, I have a question.",
    sender: str = "alice@customer.test",
    to: list[str] | None = None,
    cc: list[str] | None = None,
    rcpt: list[str] | None = None,
    message_id: str | None = None,
    in_reply_to: str | None = None,
    references: list[str] | None = None,
    headers: dict[str, Any] | None = None,
    tenant: str = "default",
    mail_from: str | None = None,
    attachments: list[dict[str, Any]] | None = None,
    received: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A parsed envelope as the ingest worker hands it to the runner."""
    to = to if to is not None else ["support@example.test"]
    mid = message_id if message_id is not None else f"<{new_id('m')}@customer.test>"
    env: dict[str, Any] = {
        "id": new_id("msg"),
        "timestamp": iso(received if received is not None else time.time()),
        "tenant": tenant,
        "traceId": "trace-test",
        "from": {"email": sender, "name": "Alice"},
        "replyTo": [],
        "to": [{"email": t, "name": ""} for t in to],
        "cc": [{"email": c, "name": ""} for c in (cc or [])],
        "subject": subject,
        "messageId": mid or None,
        "inReplyTo": in_reply_to,
        "references": references or [],
        "text": text,
        "replyText": text,
        "html": None,
        "headers": {"Message-ID": mid or None, "Subject": subject, **(headers or {})},
        "attachments": attachments or [],
        "parseErrors": [],
        "bounce": None,
        "envelope": {
            "mailFrom": sender if mail_from is None else mail_from,
            "rcptTo": rcpt if rcpt is not None else list(to) + list(cc or []),
            "clientIp": "203.0.113.5",
            "helo": "mx.customer.test",
            "tls": True,
        },
        "spf": {"passed": True, "result": "pass", "domain": "customer.test"},
        "dkim": {"passed": True, "result": "pass", "domain": "customer.test"},
        "dmarc": {"passed": True, "result": "pass", "domain": "customer.test", "policy": "none"},
        "arc": None,
        "authenticationResults": None,
        "authAction": {"action": "accept", "reason": ""},
    }
    env.update(extra)
    return env


def make_config(
    rules: list[dict[str, Any]] | None = None,
    *,
    webhooks: list[WebhookConfig] | None = None,
    data_dir: str = "./data",
    **pipeline: Any,
) -> Config:
    return Config(
        rules=rules or [],
        webhooks=webhooks or [],
        pipeline=dataclasses.replace(PipelineConfig(), **pipeline),
        store=dataclasses.replace(Config().store, data_dir=data_dir),
    )


async def ingest(store: SqliteStore, runner: PipelineRunner, env: dict[str, Any]) -> Outcome:
    """Spool, run and complete one envelope, as the ingest worker would."""
    smtp = env.get("envelope") or {}
    await store.spool(
        SpoolRecord(
            id=env["id"],
            received_at=time.time(),
            mail_from=smtp.get("mailFrom", ""),
            rcpt_to=list(smtp.get("rcptTo", [])),
            client_ip=smtp.get("clientIp", ""),
            helo=smtp.get("helo", ""),
            tls=bool(smtp.get("tls")),
            raw=b"Subject: test\r\n\r\nbody\r\n",
            tenant=env.get("tenant", "default"),
            trace_id=env.get("traceId", ""),
        )
    )
    outcome = await runner.process(env)
    await store.complete(env["id"], env, outcome.intents, state=outcome.state)
    return outcome


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "data")
    await s.open()
    try:
        yield s
    finally:
        await s.close()
