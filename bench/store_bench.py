"""Store backends side by side: SQLite one node, PostgreSQL one node, PostgreSQL two nodes.

Each scenario runs real ``mailgate serve`` processes (one ingest worker each, auth checks off,
one webhook target: a receiver in this process that answers 200 at once) and sends ``--count``
messages of 4 KB and of 100 KB through ``--sessions`` concurrent SMTP sessions (each session
sends message after message on one connection; with two nodes, sessions alternate between
them). Reported per scenario and size:

* **accepted/s**: messages / time from the first MAIL FROM to the last 250;
* **delivered/s**: messages / time from the first MAIL FROM to the last webhook received;
* **PostgreSQL's own cost**: commits per second and per message (``pg_stat_database``) and the
  CPU seconds of the postgres processes per message (``/proc``), beside mailgate's CPU per
  message — on this 2-core machine two nodes share the cores with PostgreSQL, so these say
  what bounds N nodes on real hosts.

    python bench/store_bench.py                       # 600 messages per size and scenario
    python bench/store_bench.py --count 2000          # the issue's full figure
    python bench/store_bench.py --quick               # 150, for a smoke run
    python bench/store_bench.py --sizes 4096 --scenarios sqlite,pg1 --statements 15
                                  # the target's cell only, and PostgreSQL's busiest statements

The PostgreSQL cluster is a throwaway one (tests/support/postgres.py: Debian's postgresql 15,
initdb as the postgres user, own port, stopped at the end). Loopback only; bounded by counts
and timeouts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiosmtplib
import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.http_receiver import HttpReceiver  # noqa: E402
from tests.support.postgres import PgCluster  # noqa: E402
from tests.support.server import BASE_TOML, MailgateServer  # noqa: E402

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
LINE = "Hello, my order 4721 has not arrived yet. Can you help? Alice, Customer.\r\n"


def message(i: int, size: int) -> bytes:
    head = (
        f"From: c{i}@example.org\r\nTo: support@example.test\r\nSubject: bench {i}\r\n"
        f"Message-ID: <b{i}.{time.time_ns()}@example.org>\r\n\r\n"
    )
    body = (LINE * (size // len(LINE) + 1))[: max(0, size - len(head))]
    return (head + body).encode()


def config(root: Path, backend: str, node: str, hook: str) -> str:
    data_dir = root / "data"
    text = BASE_TOML.format(
        data_dir=data_dir,
        auth="false",
        auth_extra="",
        workers=1,
        max_size="1MB",
        max_recipients=10,
        smtp_extra="max_connections_per_ip = 0\nmax_messages_per_ip_per_minute = 0\n",
    )
    if backend == "postgresql":
        store = f'[store]\ndata_dir = "{data_dir}"\n'
        text = text.replace(store, store + f'backend = "postgresql"\nnode = "{node}"\n')
    return (
        text.replace('level = "info"', 'level = "warning"')
        + f'\n[[webhooks]]\nname = "app"\nurl = "{hook}"\nsecrets = ["{SECRET}"]\n'
        + 'tenant = "default"\n\n[delivery]\npoll_interval = "100ms"\n'
    )


def cpu_seconds(pids: list[int]) -> float:
    """User+system CPU of these processes and their reaped children (clock ticks -> s)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / tick


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (postgres backends, mailgate's worker)."""
    out = [pid]
    for child in Path("/proc").iterdir():
        if not child.name.isdigit():
            continue
        try:
            ppid = int((child / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            out += tree(int(child.name))
    return out


async def pg_commits(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        value = await conn.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
    finally:
        await conn.close()
    return int(value)


async def statements_reset(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await conn.execute("SELECT pg_stat_statements_reset()")
    finally:
        await conn.close()


async def statements_top(dsn: str, count: int, top: int) -> list[str]:
    """The ``top`` statements of this database by calls: calls per message, ms per message."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT calls, total_exec_time, query FROM pg_stat_statements s"
            " JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()"
            " ORDER BY calls DESC LIMIT $1",
            top,
        )
    finally:
        await conn.close()
    return [
        f"  {r['calls'] / count:6.2f}/msg {r['total_exec_time'] / count:6.3f} ms/msg"
        f"  {' '.join(r['query'].split())[:150]}"
        for r in rows
    ]


async def send_all(nodes: list[MailgateServer], count: int, size: int, sessions: int) -> float:
    """Send ``count`` messages through ``sessions`` connections; returns when the last 250 came."""
    counter = iter(range(count))

    async def session(k: int) -> None:
        node = nodes[k % len(nodes)]
        client = aiosmtplib.SMTP(hostname=node.smtp_host, port=node.smtp_port, timeout=60)
        await client.connect()
        try:
            for i in counter:
                await client.sendmail(
                    f"c{i}@example.org", ["support@example.test"], message(i, size)
                )
        finally:
            client.close()

    await asyncio.gather(*(session(k) for k in range(sessions)))
    return time.perf_counter()


async def scenario(
    name: str, backend: str, node_count: int, size: int, args: Any, cluster: PgCluster | None
) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="mailgate-store-bench-"))
    dsn = cluster.create_database() if cluster is not None else ""
    env = {"MAILGATE_STORE_DSN": dsn} if dsn else {}
    async with HttpReceiver() as hook:
        nodes = []
        for n in range(node_count):
            sub = root / f"node{n}"
            sub.mkdir()
            nodes.append(
                MailgateServer(
                    sub, config_text=config(sub, backend, f"n{n}", hook.url()), env=env
                ).start()
            )
        try:
            pg_pids = tree(cluster.proc.pid) if cluster is not None and cluster.proc else []
            mg_pids = [pid for n in nodes if n.proc for pid in tree(n.proc.pid)]
            if dsn and args.statements:
                await statements_reset(dsn)
            commits0 = await pg_commits(dsn) if dsn else 0
            pg_cpu0, mg_cpu0 = cpu_seconds(pg_pids), cpu_seconds(mg_pids)
            start = time.perf_counter()
            accepted_at = await send_all(nodes, args.count, size, args.sessions)
            await hook.wait_for(
                args.count, timeout=args.timeout, where=lambda r: 200 <= r.status < 300
            )
            delivered_at = time.perf_counter()
            pg_pids = tree(cluster.proc.pid) if cluster is not None and cluster.proc else []
            pg_cpu = cpu_seconds(pg_pids) - pg_cpu0
            mg_cpu = cpu_seconds(mg_pids) - mg_cpu0
            commits = (await pg_commits(dsn) - commits0) if dsn else 0
            top = (
                await statements_top(dsn, args.count, args.statements)
                if dsn and args.statements
                else []
            )
        finally:
            for n in nodes:
                n.stop()
    shutil.rmtree(root, ignore_errors=True)
    elapsed = delivered_at - start
    return {
        "scenario": name,
        "size": size,
        "accepted_per_s": args.count / (accepted_at - start),
        "delivered_per_s": args.count / elapsed,
        "pg_commits_per_s": commits / elapsed if dsn else None,
        "pg_commits_per_msg": commits / args.count if dsn else None,
        "pg_cpu_ms_per_msg": 1000 * pg_cpu / args.count if dsn else None,
        "mailgate_cpu_ms_per_msg": 1000 * mg_cpu / args.count,
        "statements": top,
    }


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=600)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--quick", action="store_true", help="150 messages per run")
    parser.add_argument("--sizes", default="4096,102400")
    parser.add_argument(
        "--scenarios", default="sqlite,pg1,pg2", help="which of sqlite, pg1, pg2 to run"
    )
    parser.add_argument(
        "--statements",
        type=int,
        default=0,
        metavar="N",
        help="print PostgreSQL's N most called statements per scenario (pg_stat_statements)",
    )
    args = parser.parse_args()
    if args.quick:
        args.count = 150
    sizes = [int(s) for s in args.sizes.split(",")]
    wanted = set(args.scenarios.split(","))
    settings = {"shared_preload_libraries": "pg_stat_statements"} if args.statements else {}
    cluster = PgCluster(Path(tempfile.mkdtemp(prefix="mailgate-pg-bench-")), settings)
    cluster.start()
    results = []
    try:
        for size in sizes:
            for key, name, backend, n in (
                ("sqlite", "sqlite, 1 node", "sqlite", 1),
                ("pg1", "postgresql, 1 node", "postgresql", 1),
                ("pg2", "postgresql, 2 nodes", "postgresql", 2),
            ):
                if key not in wanted:
                    continue
                pg = cluster if backend == "postgresql" else None
                results.append(await scenario(name, backend, n, size, args, pg))
                r = results[-1]
                print(
                    f"{r['scenario']:<22} {size // 1024:>4} KB  accepted {r['accepted_per_s']:7.1f}/s"
                    f"  delivered {r['delivered_per_s']:7.1f}/s"
                    f"  pg commits {fmt(r['pg_commits_per_s'], '6.1f')}/s"
                    f" ({fmt(r['pg_commits_per_msg'], '.2f')}/msg)"
                    f"  pg cpu {fmt(r['pg_cpu_ms_per_msg'], '.2f')} ms/msg"
                    f"  mailgate cpu {r['mailgate_cpu_ms_per_msg']:.2f} ms/msg",
                    flush=True,
                )
                for line in r["statements"]:
                    print(line, flush=True)
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)
    for size in sizes:
        base = next(
            (r for r in results if r["size"] == size and r["scenario"].startswith("sqlite")), None
        )
        pg1 = next(
            (r for r in results if r["size"] == size and r["scenario"] == "postgresql, 1 node"),
            None,
        )
        if base is None or pg1 is None:
            continue
        ratio = pg1["delivered_per_s"] / base["delivered_per_s"]
        print(f"{size // 1024} KB: PostgreSQL 1 node delivers {ratio:.2f}x SQLite (target >= 0.7)")


if __name__ == "__main__":
    asyncio.run(main())
