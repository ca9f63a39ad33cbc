"""Two ``serve`` nodes on one PostgreSQL database, one SIGKILLed mid-run: the issue's full figure.

The same run as ``tests/test_multinode_e2e.py`` at full size (default 2000 messages, sent
alternately to both nodes by ``--clients`` concurrent SMTP clients): node A's process group is
SIGKILLed after half of the messages and started again at three quarters. Prints how many got a
250, how many were refused while A was down, that every accepted message was stored and
processed exactly once (one envelope, one ``message.received`` event), how many webhooks
arrived (every event at least once; duplicates are deliveries in flight when A died), and the
time each phase took.

    python bench/multinode_failover.py
    python bench/multinode_failover.py --count 500
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.http_receiver import HttpReceiver  # noqa: E402
from tests.support.multinode import make_node, send_with_failover  # noqa: E402
from tests.support.postgres import PgCluster  # noqa: E402


async def run(count: int, clients: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="mailgate-failover-"))
    cluster = PgCluster(Path(tempfile.mkdtemp(prefix="mailgate-pg-")))  # postgres-owned
    cluster.start()
    try:
        dsn = cluster.create_database()
        async with HttpReceiver() as hook:
            a = make_node(tmp, "mxa", hook.url(), dsn)
            b = make_node(tmp, "mxb", hook.url(), dsn)
            a.start()
            b.start()
            t0 = time.perf_counter()
            try:
                sent = await send_with_failover(a, b, count, clients, dsn=dsn)
                accepted, refused = sent.accepted, sent.refused
                killed_at, restarted_at = sent.killed_at, sent.restarted_at
                sent_at = time.perf_counter()
                conn = await asyncpg.connect(dsn)
                try:
                    while await conn.fetchval(
                        "SELECT COUNT(*) FROM messages WHERE state = 'spooled'"
                    ):
                        await asyncio.sleep(0.2)
                    processed_at = time.perf_counter()
                    rows = await conn.fetch(
                        "SELECT id, state, processed_by FROM messages WHERE id = ANY($1::text[])",
                        accepted,
                    )
                    events = await conn.fetch(
                        "SELECT id FROM events WHERE msg_id = ANY($1::text[])", accepted
                    )
                finally:
                    await conn.close()
                want = {e["id"] for e in events}
                await hook.wait_for(
                    len(want),
                    timeout=300,
                    where=lambda r: r.header("webhook-id") in want and 200 <= r.status < 300,
                )
                delivered_at = time.perf_counter()
            finally:
                a.stop()
                b.stop()
            got = [r.header("webhook-id") for r in hook.successful()]
            twice = {w for w in got if got.count(w) > 1}
            by_node: dict[str, int] = {}
            for r in rows:
                node = str(r["processed_by"]).split(":")[0]
                by_node[node] = by_node.get(node, 0) + 1
            stored_once = sorted(r["id"] for r in rows) == sorted(accepted)
            processed = all(r["state"] == "processed" for r in rows)
            print(f"messages sent:          {count} ({clients} clients, alternately to 2 nodes)")
            print(f"250 received:           {len(accepted)}; refused while A was down: {refused}")
            print(f"node A down for:        {restarted_at - killed_at:.1f} s (SIGKILL, restart)")
            print(f"stored once:            {stored_once}; all processed: {processed}")
            print(f"events (one each):      {len(events)} for {len(accepted)} messages")
            print(f"processed by node:      {by_node}")
            print(
                f"webhooks received:      {len(got)}: every event {want <= set(got)},"
                f" duplicates {len(got) - len(set(got))}, {len(set(got) - want)} of messages"
                " stored whose 250 the client never saw (the connection died with node A)"
            )
            print(
                f"sent twice:             {len(twice)}, all held by A's process at the kill:"
                f" {twice <= sent.held_at_kill} ({len(sent.held_at_kill)} held)"
            )
            print(f"send phase:             {sent_at - t0:.1f} s")
            print(f"all processed after:    {processed_at - t0:.1f} s")
            print(f"all delivered after:    {delivered_at - t0:.1f} s")
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(run(args.count, args.clients))


if __name__ == "__main__":
    main()
