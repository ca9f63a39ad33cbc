"""An in-process SMTP listener (the real ``SmtpServer`` on 127.0.0.1:0) over a real store.

For tests that need to look inside the front end (a failing spool, exact bytes) without a
subprocess. ``async with inproc_listener(tmp_path, spool=...) as (host, port, store)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from mailgate.config import Config, DomainConfig, SmtpConfig
from mailgate.smtp.handler import SmtpHandler
from mailgate.smtp.policy import RecipientPolicy
from mailgate.smtp.server import SmtpServer
from mailgate.store.sqlite import SqliteStore

DOMAINS = [
    DomainConfig(name="example.test", mailboxes=["support", "billing"], tenant="default"),
    DomainConfig(name="*.support.example.test", catch_all=True, tenants=["acme", "globex"]),
]


@asynccontextmanager
async def inproc_listener(
    tmp_path: Path, *, spool: Any = None, auth: Any = None, **smtp_overrides: Any
) -> AsyncIterator[tuple[str, int, SqliteStore]]:
    # No pregreet wait: the suite opens hundreds of sessions (tests of it set greet_delay).
    smtp_overrides.setdefault("greet_delay", 0.0)
    smtp_cfg = dataclasses.replace(
        SmtpConfig(listen="127.0.0.1:0", hostname="mx.test"), **smtp_overrides
    )
    cfg = Config(smtp=smtp_cfg, domains=DOMAINS)
    store = SqliteStore(tmp_path / "data")
    await store.open()
    handler = SmtpHandler(
        cfg.smtp, policy=RecipientPolicy(cfg.domains), spool=spool or store, auth=auth
    )
    server = SmtpServer(cfg.smtp, handler)
    host, port = await server.start()
    try:
        yield host, port, store
    finally:
        await server.stop(grace=1.0)
        await store.close()
