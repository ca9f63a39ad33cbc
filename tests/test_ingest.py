"""The ingest worker over a real SQLite store: one batch holding messages that depend on each other.

Commits are pipelined inside a batch; these cases check that dedup and threading still see
every earlier message of the same batch, and that a failing message does not block the rest.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mailgate.config import load_config
from mailgate.envelope import new_id
from mailgate.mime.parse import parse_message
from mailgate.pipeline.ingest import IngestWorker
from mailgate.pipeline.runner import PipelineRunner
from mailgate.store.base import SpoolRecord
from mailgate.store.blobs import BlobStore
from mailgate.store.sqlite import SqliteStore


def raw(
    subject: str,
    *,
    msgid: str | None,
    sender: str = "alice@example.org",
    extra: str = "",
    body: str = "Hello.",
) -> bytes:
    head = f"From: {sender}\r\nTo: support@example.test\r\nSubject: {subject}\r\n"
    if msgid:
        head += f"Message-ID: {msgid}\r\n"
    return (head + extra + "\r\n" + body + "\r\n").encode()


def record(data: bytes, sender: str = "alice@example.org") -> SpoolRecord:
    return SpoolRecord(
        id=new_id("msg"),
        received_at=time.time(),
        mail_from=sender,
        rcpt_to=["support@example.test"],
        client_ip="127.0.0.1",
        helo="client.test",
        tls=False,
        raw=data,
    )


async def run_batch(
    tmp_path: Path, raws: list[bytes], *, parse: Any = parse_message
) -> dict[str, dict[str, Any]]:
    cfg = load_config(None, env={"MAILGATE_DATA_DIR": str(tmp_path)})
    store = SqliteStore(tmp_path)
    await store.open()
    try:
        recs = [record(r) for r in raws]
        await store.spool(*recs)  # all spooled before the worker looks: one batch
        worker = IngestWorker(
            store,
            PipelineRunner(cfg, store),
            parse=parse,
            blob_sink=BlobStore(tmp_path / "attachments").put,
            max_attempts=5,
        )
        for _ in range(10):  # bounded: failed attempts are retried on later rounds
            if not await worker.run_once():
                break
        out = {}
        for i, r in enumerate(recs):
            row = await store.get_message_row(r.id)
            out[f"m{i}"] = row
        return out
    finally:
        await store.close()


async def test_duplicate_and_reply_in_the_same_batch(tmp_path: Path) -> None:
    rows = await run_batch(
        tmp_path,
        [
            raw("Where is my order?", msgid="<first@example.org>"),
            raw("Where is my order?", msgid="<first@example.org>"),  # retransmission
            raw(
                "Re: Where is my order?",
                msgid="<second@example.org>",
                extra="In-Reply-To: <first@example.org>\r\n",
            ),
            raw("Unrelated", msgid="<third@example.org>", sender="bob@example.org"),
        ],
    )
    first, dup, reply, other = (rows[k]["envelope"] for k in ("m0", "m1", "m2", "m3"))
    assert all(rows[k]["state"] == "processed" for k in rows)
    assert dup["duplicateOf"] == rows["m0"]["id"]
    assert first["duplicateOf"] is None
    assert reply["thread"]["id"] == first["thread"]["id"]
    assert reply["thread"]["isReply"] is True
    assert reply["thread"]["matchedBy"] == "in-reply-to"
    assert other["thread"]["id"] != first["thread"]["id"]


async def test_same_content_without_message_id_is_caught(tmp_path: Path) -> None:
    rows = await run_batch(
        tmp_path,
        [raw("No id", msgid=None, body="Same body."), raw("No id", msgid=None, body="Same body.")],
    )
    envs = [rows["m0"]["envelope"], rows["m1"]["envelope"]]
    assert [e["duplicateOf"] for e in envs].count(None) == 1
    assert {rows["m0"]["state"], rows["m1"]["state"]} == {"processed"}


async def test_a_failing_message_does_not_block_the_batch(tmp_path: Path) -> None:
    def flaky_parse(data: bytes, **kw: Any) -> dict[str, Any]:
        if b"poison" in data:
            raise RuntimeError("parser bug")
        return parse_message(data, **kw)

    rows = await run_batch(
        tmp_path,
        [raw("ok 1", msgid="<a@x>"), raw("poison", msgid="<b@x>"), raw("ok 2", msgid="<c@x>")],
        parse=flaky_parse,
    )
    assert rows["m0"]["state"] == rows["m2"]["state"] == "processed"
    assert rows["m1"]["state"] == "dead"
    assert rows["m1"]["attempts"] == 5
    assert "parser bug" in rows["m1"]["last_error"]


async def test_huge_text_is_delivered_truncated_not_quarantined(tmp_path: Path) -> None:
    """A 1.2 MB pasted log is real support mail: text cut and said so, raw kept, delivered."""
    body = "\r\n".join(f"line {i}: ERROR something failed at step {i}" for i in range(30000))
    rows = await run_batch(tmp_path, [raw("crash log attached inline", msgid="<log@x>", body=body)])
    row = rows["m0"]
    assert row["state"] == "processed"
    env = row["envelope"]
    assert env["quarantine"] is None
    assert any(e["code"] == "limit.text" for e in env["parseErrors"])


async def test_a_backlog_worker_takes_only_what_waits_beyond_its_share(tmp_path: Path) -> None:
    """``ingest.backlog_per_worker``: worker 1 (skip = 1 x the share) leaves a trickle to worker
    0, is not woken by each message, and takes what waits beyond the share."""
    cfg = load_config(None, env={"MAILGATE_DATA_DIR": str(tmp_path)})
    store = SqliteStore(tmp_path)
    await store.open()
    try:

        def worker(skip: int) -> IngestWorker:
            return IngestWorker(
                store,
                PipelineRunner(cfg, store),
                parse=parse_message,
                blob_sink=BlobStore(tmp_path / "attachments").put,
                batch_size=10,
                skip=skip,
            )

        first, extra = worker(0), worker(3)
        recs = [record(raw(f"m{i}", msgid=f"<m{i}@example.org>")) for i in range(5)]
        await store.spool(*recs[:3])
        extra.wake()
        assert not extra._wake.is_set()  # polls instead
        assert await extra.run_once() == 0  # three waiting: worker 0's share
        await store.spool(*recs[3:])
        assert await extra.run_once() == 2  # the two beyond the share
        assert await first.run_once() == 3
        states = {r.id: (await store.get_message_row(r.id))["state"] for r in recs}
        assert set(states.values()) == {"processed"}
    finally:
        await store.close()
