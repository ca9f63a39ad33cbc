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


async def send_with_failover(
    a: MailgateServer, b: MailgateServer, count: int, clients: int
) -> FailoverRun:
    """Send ``count`` messages alternately to both nodes from ``clients`` SMTP clients; node A
    is SIGKILLed while the second quarter is being sent and started again for the last."""
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
        a.kill()
        killed_at = time.perf_counter()
        await sending
        a.start()
        restarted_at = time.perf_counter()
        await burst(count * 3 // 4, count)
    return FailoverRun(accepted, refused, killed_at, restarted_at)
