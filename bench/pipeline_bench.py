#!/usr/bin/env python3
"""Pipeline cost per message with 50 rules, beside the cost of parsing the same message.

    python bench/pipeline_bench.py [--rounds 3] [--rules 50]

For every message of the real-world corpus in ``fixtures/corpus/MANIFEST.txt``, in one run:
``parse_message(raw)`` is timed (without a blob sink: the parse alone), the message is parsed
again untimed with the data dir's blob store (as the ingest worker does, so the scan reads
attachment bytes where production would), then the envelope gets what the ingest worker adds (ids,
session facts, auth results), the message is spooled into a real SQLite store in a temporary
directory, and ``PipelineRunner.process(env)`` is timed: every stage, with 50 rules of the
kinds operators write (subject/body regexes, address, header, attachment, auth, entity and
intent matchers, any/all/not). ``store.complete`` then applies the intents (not timed), so
later messages see a growing dedup and thread index, as in production. Each round gives the
messages fresh Message-IDs so dedup does not cut runs short.

Prints per-message means and the ratio pipeline/parse (target: <= 0.3), and the mean time
per stage. Both sides run in the same process, same run, so the ratio is machine-independent.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mailgate.config import Config, WebhookConfig  # noqa: E402
from mailgate.envelope import new_id  # noqa: E402
from mailgate.mime.parse import parse_message  # noqa: E402
from mailgate.pipeline.runner import PipelineRunner  # noqa: E402
from mailgate.store.base import SpoolRecord  # noqa: E402
from mailgate.store.blobs import BlobStore  # noqa: E402
from mailgate.store.sqlite import SqliteStore  # noqa: E402


def load_corpus() -> list[bytes]:
    corpus = REPO / "fixtures" / "corpus"
    out = []
    for line in (corpus / "MANIFEST.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = corpus / line
        if p.is_file():
            out.append(p.read_bytes())
    return out


def make_rules(n: int) -> list[dict[str, Any]]:
    """``n`` rules cycling through the matcher kinds real rule sets use."""
    words = [
        "invoice",
        "refund",
        "billing",
        "password",
        "outage",
        "cancel",
        "upgrade",
        "contract",
        "delivery",
        "shipping",
        "return",
        "warranty",
        "login",
        "security",
        "gdpr",
        "api",
    ]
    kinds = [
        lambda i, w: {"subject": f"/{w}|{w}s/i"},
        lambda i, w: {"any": [{"subject": f"/{w}/i"}, {"to": f"{w}@"}]},
        lambda i, w: {"text": w},
        lambda i, w: {"all": [{"from": f"@{w}.example"}, {"not": {"intent": "human"}}]},
        lambda i, w: {"header.X-Mailer": f"/{w}/i"},
        lambda i, w: {"attachment.extension": ["pdf", "docx"], "subject": w},
        lambda i, w: {"dkim.passed": False, "dmarc.result": "fail"},
        lambda i, w: {"entity": "orderId", "text": f"/\\b{w}\\b/i"},
        lambda i, w: {"replyText": f"/(please|kindly) {w}/i"},
        lambda i, w: {"any": [{"spam.score": "> 5"}, {"from.domain": f"{w}.test"}]},
    ]
    rules = []
    for i in range(n):
        w = words[i % len(words)]
        cond = kinds[i % len(kinds)](i, w)
        then: dict[str, Any] = {"tags": [f"t{i}"]}
        if i % 3 == 0:
            then["queue"] = f"q{i}"
        if i % 7 == 0:
            then["priority"] = "high"
        rules.append({"name": f"rule-{i:02d}", "if": cond, "then": then})
    return rules


def augment(env: dict[str, Any], tag: str) -> dict[str, Any]:
    mid = env.get("messageId") or f"<{new_id('none')}@bench>"
    env["messageId"] = f"<{tag}.{mid.strip('<>')}>"
    env.update(
        id=new_id("msg"),
        timestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        tenant="default",
        traceId="bench",
        envelope={
            "mailFrom": (env.get("from") or {}).get("email") or "",
            "rcptTo": ["support@example.test"],
            "clientIp": "203.0.113.5",
            "helo": "mx.example.org",
            "tls": True,
        },
        spf={"passed": True, "result": "pass", "domain": "example.org"},
        dkim={"passed": False, "result": "none", "domain": None},
        dmarc={"passed": False, "result": "none", "domain": "example.org"},
        arc=None,
        authenticationResults="mx.example.test; spf=pass",
        authAction={"action": "accept", "reason": ""},
    )
    return env


async def run(rounds: int, n_rules: int) -> int:
    corpus = load_corpus()
    if not corpus:
        print("no corpus found at", REPO / "fixtures" / "corpus", file=sys.stderr)
        return 1
    cfg = Config(
        rules=make_rules(n_rules),
        webhooks=[WebhookConfig(url="http://127.0.0.1:9/h", secrets=["whsec_x"], name="main")],
    )
    parse_times: list[float] = []
    pipe_times: list[float] = []
    stage_times: dict[str, list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        blobs = BlobStore(Path(tmp) / "data" / "attachments")
        async with SqliteStore(Path(tmp) / "data") as store:
            runner = PipelineRunner(cfg, store)
            assert len(runner.rules) == n_rules
            for r in range(rounds):
                for raw in corpus:
                    t0 = time.perf_counter()
                    env = parse_message(raw)
                    t1 = time.perf_counter()
                    # Untimed: parse again with the blob store, as the ingest worker does, so
                    # the scan finds attachment bytes where production would.
                    env = parse_message(raw, blob_sink=blobs.put)
                    augment(env, f"r{r}")
                    await store.spool(
                        SpoolRecord(
                            id=env["id"],
                            received_at=time.time(),
                            mail_from=env["envelope"]["mailFrom"],
                            rcpt_to=env["envelope"]["rcptTo"],
                            client_ip="203.0.113.5",
                            helo="x",
                            tls=True,
                            raw=raw,
                        )
                    )
                    t2 = time.perf_counter()
                    outcome = await runner.process(env)
                    t3 = time.perf_counter()
                    await store.complete(env["id"], env, outcome.intents, state=outcome.state)
                    if r > 0 or rounds == 1:  # round 0 warms caches (regex, SQLite pages)
                        parse_times.append(t1 - t0)
                        pipe_times.append(t3 - t2)
                        for res in outcome.results:
                            stage_times[res.stage].append(res.seconds)
    parse_mean = statistics.fmean(parse_times)
    pipe_mean = statistics.fmean(pipe_times)
    ratio = sum(pipe_times) / sum(parse_times)
    print(
        f"corpus: {len(corpus)} messages x {rounds} rounds ({len(parse_times)} timed), {n_rules} rules"
    )
    print(
        f"parse_message   mean {parse_mean * 1e6:8.1f} us/msg   median {statistics.median(parse_times) * 1e6:8.1f} us"
    )
    print(
        f"pipeline        mean {pipe_mean * 1e6:8.1f} us/msg   median {statistics.median(pipe_times) * 1e6:8.1f} us"
    )
    print(
        f"ratio pipeline/parse = {ratio:.3f}  (target <= 0.3)  {'OK' if ratio <= 0.3 else 'OVER'}"
    )
    print("per stage (us/msg):      mean   median")
    for name, values in stage_times.items():
        print(
            f"  {name:<11} {statistics.fmean(values) * 1e6:12.1f} {statistics.median(values) * 1e6:8.1f}"
        )
    return 0 if ratio <= 0.3 else 2


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rules", type=int, default=50)
    args = ap.parse_args()
    return asyncio.run(run(max(1, args.rounds), args.rules))


if __name__ == "__main__":
    sys.exit(main())
