"""An in-process mailgate worker for auto-reply tests: a real SqliteStore, the real pipeline.

``ReplyHarness`` spools raw messages into a real store in a temp dir, builds the envelope with
the real parser, runs the configured pipeline (``respond`` included) and completes the message
in one transaction, exactly as the ingest worker does; ``outbox()`` reads the reply outbox::

    async with ReplyHarness(tmp_path, smarthost=sink.address) as h:
        env = await h.deliver(raw, mail_from="alice@example.org")
        rows = await h.outbox()
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from mailgate.config import Config, DomainConfig, ReplyConfig, StoreConfig
from mailgate.envelope import Envelope, new_id
from mailgate.mime.parse import parse_message
from mailgate.pipeline.ingest import build_envelope
from mailgate.pipeline.runner import Outcome, PipelineRunner
from mailgate.reply.compose import ReplyDraft
from mailgate.store.base import SpoolRecord
from mailgate.store.replies import ReplyRecord
from mailgate.store.sqlite import SqliteStore

DOMAINS = [
    DomainConfig(name="example.test", mailboxes=["support", "billing"], tenant="default"),
    DomainConfig(name="*.support.example.test", catch_all=True, tenants=["acme", "globex"]),
]


def message(
    subject: str = "Help with my order",
    *,
    sender: str = "Alice Example <alice@example.org>",
    to: str = "support@example.test",
    message_id: str | None = None,
    headers: str = "",
    body: str = "Hello, my order 472100 did not arrive.\r\n",
) -> bytes:
    """A small, well-formed customer message (extra header lines end with CRLF)."""
    mid = message_id or f"<{new_id('m').lower()}@mail.example.org>"
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: {mid}\r\n"
        f"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n{headers}\r\n{body}"
    ).encode()


class ReplyHarness:
    def __init__(
        self,
        tmp_path: Path,
        *,
        rules: list[dict[str, Any]] | None = None,
        source: str = "<defaults>",
        **reply: Any,
    ) -> None:
        reply.setdefault("enabled", True)
        reply.setdefault("from_", "Example Support <support@example.test>")
        reply.setdefault("templates_dir", str(tmp_path / "templates"))
        self.cfg = Config(
            store=StoreConfig(data_dir=str(tmp_path / "data")),
            domains=DOMAINS,
            reply=ReplyConfig(**reply),
            rules=rules or [],
            source=source,
        )
        self.store = SqliteStore(tmp_path / "data")
        self.runner: PipelineRunner | None = None
        self.outcomes: list[Outcome] = []

    def with_reply(self, **changes: Any) -> None:
        """Change ``[reply]`` settings for the next deliveries."""
        self.cfg = dataclasses.replace(
            self.cfg, reply=dataclasses.replace(self.cfg.reply, **changes)
        )
        self.runner = PipelineRunner(self.cfg, self.store)

    async def __aenter__(self) -> ReplyHarness:
        await self.store.open()
        self.runner = PipelineRunner(self.cfg, self.store)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.store.close()

    async def spool(
        self,
        raw: bytes,
        *,
        mail_from: str = "alice@example.org",
        rcpt_to: list[str] | None = None,
        auth: dict[str, Any] | None = None,
        tenant: str = "default",
    ) -> Envelope:
        """Spool and parse, without running the pipeline (returns the envelope)."""
        rec = SpoolRecord(
            id=new_id("msg"),
            received_at=time.time(),
            mail_from=mail_from,
            rcpt_to=rcpt_to or ["support@example.test"],
            client_ip="203.0.113.5",
            helo="mail.example.org",
            tls=False,
            raw=raw,
            auth=auth,
            tenant=tenant,
        )
        await self.store.spool(rec)
        claimed = await self.store.claim_spooled(1000, owner="reply-harness")
        msg = next(m for m in claimed if m.id == rec.id)
        return build_envelope(msg, parse_message, None)

    async def run(self, env: Envelope, *, mode: Any = "ingest") -> Outcome:
        assert self.runner is not None
        outcome = await self.runner.process(env, mode=mode)
        self.outcomes.append(outcome)
        return outcome

    async def complete(self, env: Envelope, outcome: Outcome) -> None:
        await self.store.complete(env["id"], env, list(outcome.intents), state=outcome.state)

    async def deliver(self, raw: bytes, **kwargs: Any) -> Envelope:
        """Spool, run the pipeline, store the result (one transaction); returns the envelope."""
        env = await self.spool(raw, **kwargs)
        outcome = await self.run(env)
        await self.complete(env, outcome)
        return env

    async def reply_bytes(self, reply_id: str) -> bytes:
        """The reply as the SMTP worker would build it (unsigned)."""
        return ReplyDraft.from_json(await self.store.get_reply_draft(reply_id)).build()

    async def outbox(self, state: str | None = None) -> list[ReplyRecord]:
        return list(reversed(await self.store.list_replies(state=state, limit=1000)))
