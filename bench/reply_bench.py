#!/usr/bin/env python3
"""Auto-reply costs: the ``respond`` stage per message, and SMTP outbox throughput.

    python bench/reply_bench.py [--messages 500] [--dkim]

1. ``respond`` stage: N human messages (distinct senders, so every one is acknowledged) go
   through the real pipeline over a real SQLite store in a temporary directory; prints the
   mean and median time of the ``respond`` stage beside the whole pipeline run.
2. SMTP outbox: the same N queued replies are sent by ``ReplySender`` to a local aiosmtpd sink
   (``tests/support/smtp_sink.py``) on 127.0.0.1; prints replies per second (with ``--dkim``,
   each reply is RSA-2048 signed first).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from tests.support.reply_harness import ReplyHarness, message  # noqa: E402
from tests.support.smtp_sink import SmtpSink  # noqa: E402

from mailgate.delivery.smtp_out import ReplySender  # noqa: E402


async def main(n: int, use_dkim: bool) -> None:
    with tempfile.TemporaryDirectory() as folder, SmtpSink() as sink:
        tmp = Path(folder)
        extra: dict[str, str] = {}
        if use_dkim:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            (tmp / "dkim.pem").write_bytes(pem)
            extra = {
                "dkim_domain": "example.test",
                "dkim_selector": "bench",
                "dkim_key_file": str(tmp / "dkim.pem"),
            }
        async with ReplyHarness(
            tmp, smarthost=sink.address, per_sender_limit=0, global_hourly_cap=0, **extra
        ) as h:
            for i in range(n):
                await h.deliver(
                    message(f"Question {i} about order {100000 + i}"),
                    mail_from=f"customer{i}@example.org",
                )
            respond = [r.seconds for o in h.outcomes for r in o.results if r.stage == "respond"][
                10:
            ]
            total = [sum(r.seconds for r in o.results) for o in h.outcomes][10:]
            print(f"messages: {n}, acknowledged: {len(await h.outbox('pending'))}")
            print(
                f"respond stage   mean {statistics.mean(respond) * 1e6:8.1f} us"
                f"   median {statistics.median(respond) * 1e6:8.1f} us"
            )
            print(
                f"whole pipeline  mean {statistics.mean(total) * 1e6:8.1f} us"
                f"   median {statistics.median(total) * 1e6:8.1f} us"
            )
            sender = ReplySender(h.store, h.cfg.reply, batch=50)
            started = time.perf_counter()
            sent = 0
            while sent < n:
                got = await sender.run_once()
                if not got:
                    break
                sent += got
            sink.wait_for(n, timeout=120)
            elapsed = time.perf_counter() - started
            print(
                f"smtp outbox     {n / elapsed:8.1f} replies/s"
                f" ({'DKIM RSA-2048' if use_dkim else 'unsigned'}, one connection per 50)"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--dkim", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.messages, args.dkim))
