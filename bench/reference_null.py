"""Bare aiosmtpd reference server: answers 250 to every message and stores nothing.

The Python SMTP protocol ceiling that bench/smtp_bench.py compares mailgate against, in the
same run (the shape of ../shared/bench/aiosmtpd_null.py: hostname given, so aiosmtpd does not
call socket.getfqdn() per connection).

    python bench/reference_null.py --listen 127.0.0.1:2603
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from aiosmtpd.smtp import SMTP


class Drop:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        return "250 OK"


async def main(host: str, port: int) -> None:
    handler = Drop()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="bench.local", ident="bench-null"),
        host,
        port,
        backlog=1024,
        reuse_address=True,
    )
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set_result, None)
    print(f"listening {host}:{port}", file=sys.stderr, flush=True)
    await stop
    server.close()
    print(f"accepted={handler.count}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", default="127.0.0.1:2603")
    a = ap.parse_args()
    h, p = a.listen.rsplit(":", 1)
    asyncio.run(main(h, int(p)))
