#!/usr/bin/env python3
"""Routing classifier cost: prediction per 4 KB message, training time, model load time.

Reference in the same run: ``parse_message`` of the same 4 KB messages (what every message
costs anyway). Target: prediction (text extraction + features + scores + the explanation)
≤ 1 ms per 4 KB message. The model is trained on ``fixtures/routing`` (360 messages, 8 queues);
the 4 KB messages are fixture messages padded with more of their own kind of text to ~4 KB.

    python bench/classifier_bench.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from mailgate.classifier.features import message_text
from mailgate.classifier.model import load_model
from mailgate.classifier.train import train
from mailgate.cli.model import examples_from_file
from mailgate.config import Config
from mailgate.mime.parse import parse_message

ROUTING = Path(__file__).resolve().parent.parent / "fixtures" / "routing"


def four_kb(raw: bytes) -> bytes:
    """The message with its own body repeated until it is about 4 KB (plain-text messages)."""
    head, _, body = raw.partition(b"\n\n")
    out = body
    while len(head) + len(out) < 4096:
        out += b"\n" + body
    return head + b"\n\n" + out[: 4096 - len(head)]


def timed(fn, items, rounds):  # type: ignore[no-untyped-def]
    per = []
    for _ in range(rounds):
        t = time.perf_counter()
        for it in items:
            fn(it)
        per.append((time.perf_counter() - t) / len(items))
    return statistics.median(per)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    cfg = Config()
    t = time.perf_counter()
    examples = examples_from_file(cfg, ROUTING / "labels.jsonl")
    read_s = time.perf_counter() - t
    t = time.perf_counter()
    result = train(examples, min_examples=5)
    train_s = time.perf_counter() - t
    data = result.model.dumps()
    t = time.perf_counter()
    model = load_model(data)
    load_s = time.perf_counter() - t

    raws = []
    for p in sorted((ROUTING / "messages").glob("*.eml")):
        raw = p.read_bytes()
        if (
            b"multipart" not in raw[:2000]
            and b"text/plain" in raw[:2000]
            and b"quoted-printable" not in raw[:2000]
        ):
            raws.append(four_kb(raw))
    envs = [parse_message(r) for r in raws]
    sizes = [len(r) for r in raws]

    def predict(env):  # type: ignore[no-untyped-def]
        subject, body = message_text(env)
        return model.predict(subject, body)

    timed(predict, envs, 1)  # warm the per-word cache as a running worker has it
    parse_s = timed(parse_message, raws, args.rounds)
    predict_s = timed(predict, envs, args.rounds)
    print(f"messages: {len(raws)} of {statistics.mean(sizes):.0f} bytes on average")
    print(f"read + parse of the labelled set: {read_s:.2f} s")
    print(
        f"training ({len(examples)} messages, {len(result.model.queues)} queues,"
        f" {len(result.model.vectorizer)} features): {train_s:.2f} s"
    )
    print(f"model JSON: {len(data) / 1024:.0f} KiB, load: {load_s * 1000:.1f} ms")
    print(f"parse_message per 4 KB message (reference): {parse_s * 1e3:.3f} ms")
    print(
        f"prediction per 4 KB message: {predict_s * 1e3:.3f} ms ({predict_s / parse_s:.2f}x parse)"
    )
    print("target: prediction <= 1 ms per 4 KB message:", "met" if predict_s <= 1e-3 else "NOT met")


if __name__ == "__main__":
    main()
