"""Nodes of one PostgreSQL-backed cluster for the multi-node tests and ``bench/multinode_failover``.

Each node is a real ``mailgate serve`` with its own data dir and node name, all on one database
(``MAILGATE_STORE_DSN``); `send_with_failover` is the run in which node A is SIGKILLed mid-way.
"""

from __future__ import annotations

import asyncio
import smtplib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from tests.support.delivery import SECRET
from tests.support.server import BASE_TOML, MailgateServer


def postgres_node_toml(root: Path, name: str, *, store_extra: str = "") -> str:
    """The base config with ``[store]`` on PostgreSQL as node ``name`` (no worker threads)."""
    data_dir = root / "data"
    text = BASE_TOML.format(
        data_dir=data_dir,
        auth="false",
        auth_extra="",
        workers=0,
        max_size="1MB",
        max_recipients=10,
        smtp_extra="",
    )
    store = f'[store]\ndata_dir = "{data_dir}"\n'
    assert store in text
    return text.replace(store, store + f'backend = "postgresql"\nnode = "{name}"\n{store_extra}')


def node_config(root: Path, name: str, hook: str) -> str:
    """A node with a short spool lease, delivering every tenant's events to ``hook``."""
    return (
        postgres_node_toml(root, name, store_extra='lease = "5s"\n')
        + f'\n[[webhooks]]\nname = "app"\nurl = "{hook}"\nsecrets = ["{SECRET}"]\n'
        + 'tenant = "default"\n\n[delivery]\npoll_interval = "100ms"\n'
    )


def make_node(tmp_path: Path, name: str, hook: str, dsn: str) -> MailgateServer:
    root = tmp_path / name
    root.mkdir()
    return MailgateServer(
        root, config_text=node_config(root, name, hook), env={"MAILGATE_STORE_DSN": dsn}
    )


def send_one(node: MailgateServer, i: int) -> str | None:
    """The message id of a 250, or None when the node was down or the session broke."""
    raw = (
        f"From: c{i}@example.org\r\nTo: support@example.test\r\nSubject: order {i}\r\n"
        f"Message-ID: <m{i}.{time.time_ns()}@example.org>\r\n\r\nbody {i}\r\n"
    )
    try:
        reply = node.send(raw, mail_from=f"c{i}@example.org")
    except (OSError, smtplib.SMTPException):
        return None
    return reply.rsplit(" ", 1)[-1].strip()


@dataclass
class FailoverRun:
    accepted: list[str]
    """Message ids that got a 250."""
    refused: int
    """Messages refused (or whose session broke) while node A was down."""
    killed_at: float
    restarted_at: float
    """``time.perf_counter()`` when A was SIGKILLed and when it was started again."""
    restarted_wall: float = 0.0
    """``time.time()`` just before A was started again (the receiver stamps arrivals so)."""
    held_at_kill: frozenset[str] = frozenset()
    """Event ids whose webhook delivery the killed process held (leased) when it died: the
    only deliveries that may reach the receiver twice (with ``dsn`` given)."""


async def held_by(dsn: str, pid: int) -> frozenset[str]:
    """Event ids of pending webhook deliveries leased to a process ``pid`` (``node:pid:nonce``
    owners): read right after that process died, before anything can release them."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT event_id FROM outbox WHERE state = 'pending' AND locked_until > 0"
            " AND split_part(lock_owner, ':', 2) = $1",
            str(pid),
        )
    finally:
        await conn.close()
    return frozenset(r["event_id"] for r in rows)


async def send_with_failover(
    a: MailgateServer, b: MailgateServer, count: int, clients: int, *, dsn: str | None = None
) -> FailoverRun:
    """Send ``count`` messages alternately to both nodes from ``clients`` SMTP clients; node A
    is SIGKILLed while the second quarter is being sent and started again for the last. With
    ``dsn``, the deliveries A's process held when it died are read at once (``held_at_kill``)."""
    accepted: list[str] = []
    refused = 0
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(clients) as pool:

        async def burst(start: int, stop: int) -> None:
            nonlocal refused
            jobs = [
                loop.run_in_executor(pool, send_one, a if i % 2 else b, i)
                for i in range(start, stop)
            ]
            for got in await asyncio.gather(*jobs):
                if got is None:
                    refused += 1
                else:
                    accepted.append(got)

        await burst(0, count // 2)
        # node A dies with whatever it had claimed, leased or in flight
        sending = asyncio.ensure_future(burst(count // 2, count * 3 // 4))
        await asyncio.sleep(0.2)
        assert a.proc is not None
        pid = a.proc.pid  # workers = 0: the one process holds every lease of node A
        a.kill()
        killed_at = time.perf_counter()
        held = await held_by(dsn, pid) if dsn else frozenset()
        await sending
        restarted_wall = time.time()
        a.start()
        restarted_at = time.perf_counter()
        await burst(count * 3 // 4, count)
    return FailoverRun(accepted, refused, killed_at, restarted_at, restarted_wall, held)
