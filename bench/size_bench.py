#!/usr/bin/env python3
"""Cost of each worker step against message size: does any step grow faster than the bytes?

    python bench/size_bench.py [--sizes 10K,100K,1M,10M] [--repeat 3] [--kind plain|html|smtp-source]

For each size, a generated message (``plain``: prose lines, a quoted reply history and a
signature, as support mail looks; ``html``: the same as text/plain + text/html alternatives;
``smtp-source``: Postfix smtp-source's body of ``X`` lines) is run through the steps the ingest
worker runs, in this process, each timed on its own: ``parse`` (``parse_message``), every
pipeline stage (default stages and config, one webhook target), ``json`` (encoding the envelope
as the store does) and ``commit`` (``store.complete`` into a real SQLite store with the default
durability). ``commit`` encodes the envelope itself (the one encoding the worker does: the
webhook sends those stored bytes), so ``json`` is shown as the part of ``commit`` it is and is
not added to the total again. Prints µs per message and µs per KB for each step and size, and the growth of µs/KB
from one size to the next: a step whose µs/KB rises with size is super-linear.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mailgate.config import Config, WebhookConfig  # noqa: E402
from mailgate.envelope import new_id  # noqa: E402
from mailgate.mime.parse import parse_message  # noqa: E402
from mailgate.pipeline.runner import PipelineRunner  # noqa: E402
from mailgate.store.base import SpoolRecord  # noqa: E402
from mailgate.store.blobs import BlobStore  # noqa: E402
from mailgate.store.sqlite import SqliteStore  # noqa: E402
from mailgate.store.sqlite_base import dumps  # noqa: E402

UNITS = {"K": 1024, "M": 1024 * 1024}
INSIDE = {"json": "inside commit, not added to the total"}
"""Steps measured on their own that another step also does: shown, not counted twice."""

PROSE = (
    "Hello team, my order #{n} arrived damaged and the invoice INV-2024-{n} does not match the "
    "amount on PO-{n}. Could you please check ticket T-{n} and call me back?"
)


def body_plain(size: int) -> str:
    """Prose, a few lines per paragraph, then a signature and a quoted history: half the size."""
    lines: list[str] = []
    n = 1000
    total = 0
    while total < size // 2:
        line = PROSE.format(n=n)
        lines.append(line)
        total += len(line) + 2
        n += 1
    lines += ["", "Best regards,", "Jane Doe", "-- ", "Jane Doe | ACME Corp | +1 555 0100", ""]
    lines.append("On Mon, 1 Dec 2026 at 10:00, Support <support@example.test> wrote:")
    while total < size:
        line = "> " + PROSE.format(n=n)
        lines.append(line)
        total += len(line) + 2
        n += 1
    return "\r\n".join(lines) + "\r\n"


def message(size: int, kind: str) -> bytes:
    head = (
        "From: Jane Doe <jane@example.org>\r\nTo: support@example.test\r\n"
        f"Subject: Damaged order\r\nMessage-ID: <{new_id('m')}@example.org>\r\n"
        "Date: Fri, 4 Dec 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
    )
    if kind == "smtp-source":
        line = "X" * 78
        body = "".join(f"{i % 10}{line}\r\n" for i in range(size // 81 + 1))
        return (head + "\r\n" + body).encode()
    text = body_plain(size if kind == "plain" else size // 2)
    if kind == "plain":
        return (head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + text).encode()
    html = "".join(f"<p>{line}</p>\r\n" for line in text.split("\r\n") if line)
    return (
        head + 'Content-Type: multipart/alternative; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + text + "\r\n"
        "--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + html + "\r\n--b1--\r\n"
    ).encode()


def envelope_for(env: dict[str, Any]) -> None:
    env.update(
        id=new_id("msg"),
        timestamp="2026-12-04T10:00:00Z",
        tenant="default",
        traceId="bench",
        envelope={
            "mailFrom": "jane@example.org",
            "rcptTo": ["support@example.test"],
            "clientIp": "203.0.113.5",
            "helo": "mx.example.org",
            "tls": False,
        },
        spf=None,
        dkim=None,
        dmarc=None,
        arc=None,
        authenticationResults=None,
        authAction=None,
    )


async def run(sizes: list[int], repeat: int, kind: str) -> None:
    cfg = Config(webhooks=[WebhookConfig(url="http://127.0.0.1:9/h", secrets=["whsec_x"])])
    table: dict[str, dict[int, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        blobs = BlobStore(Path(tmp) / "data" / "attachments")
        async with SqliteStore(Path(tmp) / "data", durability=cfg.store.durability) as store:
            runner = PipelineRunner(cfg, store)
            for size in sizes:
                times: dict[str, list[float]] = {}
                for _ in range(repeat + 1):  # the first run warms caches and is not counted
                    raw = message(size, kind)
                    t0 = time.perf_counter()
                    env = parse_message(raw, blob_sink=blobs.put)
                    step = {"parse": time.perf_counter() - t0}
                    envelope_for(env)
                    rec = SpoolRecord(
                        id=env["id"],
                        received_at=time.time(),
                        mail_from="jane@example.org",
                        rcpt_to=["support@example.test"],
                        client_ip="203.0.113.5",
                        helo="x",
                        tls=False,
                        raw=raw,
                    )
                    await store.spool(rec)
                    outcome = await runner.process(env)
                    for res in outcome.results:
                        step[res.stage] = res.seconds
                    t0 = time.perf_counter()
                    dumps(env)
                    step["json"] = time.perf_counter() - t0
                    t0 = time.perf_counter()
                    await store.complete(env["id"], env, outcome.intents, state=outcome.state)
                    step["commit"] = time.perf_counter() - t0
                    for k, v in step.items():
                        times.setdefault(k, []).append(v)
                for k, vs in times.items():
                    table.setdefault(k, {})[size] = statistics.median(vs[1:])
    print_table(table, sizes, kind)


def print_table(table: dict[str, dict[int, float]], sizes: list[int], kind: str) -> None:
    label = {s: (f"{s // UNITS['M']} MB" if s >= UNITS["M"] else f"{s // 1024} KB") for s in sizes}
    print(f"kind = {kind}; µs/msg (µs/KB); last column: µs/KB at the largest / at the smallest")
    print("| step | " + " | ".join(label[s] for s in sizes) + " | growth |")
    print("|---|" + "---|" * (len(sizes) + 1))
    total = {s: 0.0 for s in sizes}
    for k, by_size in table.items():
        cells = []
        for s in sizes:
            t = by_size.get(s, 0.0)
            if k not in INSIDE:
                total[s] += t
            cells.append(f"{t * 1e6:.0f} ({t * 1e6 / (s / 1024):.2f})")
        first = by_size.get(sizes[0], 0.0) / (sizes[0] / 1024)
        last = by_size.get(sizes[-1], 0.0) / (sizes[-1] / 1024)
        growth = f"{last / first:.2f}×" if first > 0 else "-"
        name = f"{k} ({INSIDE[k]})" if k in INSIDE else k
        print(f"| {name} | " + " | ".join(cells) + f" | {growth} |")
    cells = [f"{total[s] * 1e6:.0f} ({total[s] * 1e6 / (s / 1024):.2f})" for s in sizes]
    g = (total[sizes[-1]] / sizes[-1]) / (total[sizes[0]] / sizes[0])
    print("| **total** | " + " | ".join(cells) + f" | {g:.2f}× |")


def parse_size(text: str) -> int:
    text = text.strip().upper().rstrip("B")
    if text[-1] in UNITS:
        return int(float(text[:-1]) * UNITS[text[-1]])
    return int(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10K,100K,1M,10M")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--kind", choices=["plain", "html", "smtp-source"], default="plain")
    args = ap.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    asyncio.run(run(sizes, max(1, args.repeat), args.kind))


if __name__ == "__main__":
    main()
