"""Erasure and the retention purge on PostgreSQL (issue 15), against a throwaway cluster
(tests/support/postgres.py): messages go through the real pipeline into the store, and the
CLI (`mailgate erase`, `mailgate purge`) runs against the same database."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from click.testing import CliRunner

from mailgate.app import build_store, governance_for, load_config
from mailgate.cli import main
from mailgate.mime.parse import parse_message
from mailgate.pipeline.runner import PipelineRunner
from mailgate.store.base import SpoolRecord
from tests.support.multinode import postgres_node_toml
from tests.support.postgres import PgCluster
from tests.support.server import MailgateServer

ALICE = "alice@customer.test"


def write_config(tmp_path: Path, extra: str = "") -> Path:
    cfg = tmp_path / "mailgate.toml"
    cfg.write_text(
        '[[domains]]\nname = "example.test"\ncatch_all = true\n'
        '[[domains]]\nname = "acme.test"\ncatch_all = true\ntenant = "acme"\n'
        f'[store]\nbackend = "postgresql"\ndata_dir = "{tmp_path / "data"}"\n'
        '[[api.tokens]]\nname = "ops"\ntoken = "test-token-0123456789abcdef0123456789"\n'
        '[[webhooks]]\nname = "app"\nurl = "http://127.0.0.1:9/hook"\n'
        'secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]\n'
        'events = ["message.received", "subject.erased"]\n'
        '[[webhooks]]\nname = "acme-app"\nurl = "http://127.0.0.1:9/acme"\ntenant = "acme"\n'
        'secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]\n'
        'events = ["message.received", "subject.erased"]\n' + extra
    )
    return cfg


def message(
    sender: str, mid: str, body: str, *, to: str = "help@example.test", irt: str = ""
) -> bytes:
    head = f"From: {sender}\r\nTo: {to}\r\nSubject: order {mid}\r\nMessage-ID: <{mid}>\r\n"
    if irt:
        head += f"In-Reply-To: <{irt}>\r\nReferences: <{irt}>\r\n"
    return (head + f"\r\n{body}\r\n").encode()


async def store_all(
    cfg_path: Path, dsn: str, items: list[tuple[str, str, bytes]]
) -> list[dict[str, Any]]:
    """(tenant, envelope sender, raw) through the pipeline into the store; the envelopes."""
    cfg = load_config(cfg_path, env={"MAILGATE_STORE_DSN": dsn})
    out = []
    async with build_store(cfg) as store:
        runner = PipelineRunner(cfg, store)
        for n, (tenant, sender, raw) in enumerate(items):
            env = parse_message(raw)
            msg_id = f"msg_{time.time_ns():020d}{n:06d}"
            rcpt = "help@acme.test" if tenant == "acme" else "help@example.test"
            env.update(id=msg_id, timestamp="2026-12-05T00:00:00Z", tenant=tenant)
            env["envelope"] = {"mailFrom": sender, "rcptTo": [rcpt]}
            await store.spool(
                SpoolRecord(
                    id=msg_id,
                    received_at=time.time(),
                    mail_from=sender,
                    rcpt_to=[rcpt],
                    client_ip="203.0.113.5",
                    helo="mx.customer.test",
                    tls=False,
                    raw=raw,
                    tenant=tenant,
                )
            )
            outcome = await runner.process(env)
            await store.complete(msg_id, env, outcome.intents, state=outcome.state)
            out.append(env)
    return out


def cli(cfg: Path, dsn: str, *args: str) -> Any:
    result = CliRunner().invoke(
        main, [*args, "-c", str(cfg), "--json"], env={"MAILGATE_STORE_DSN": dsn}
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


async def query(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def test_erase_on_postgresql(tmp_path: Path, pg_dsn: str) -> None:
    cfg = write_config(tmp_path)
    items = [
        ("default", ALICE, message(f"Alice <{ALICE}>", "a1@customer.test", "my kettle broke")),
        ("default", "bob@other.test", message("Bob <bob@other.test>", "b1@other.test", "hi")),
        # Bob follows up in his own thread, copying Alice: that message goes, his thread stays
        # and Alice leaves its participants
        (
            "default",
            "bob@other.test",
            message(
                "Bob <bob@other.test>",
                "b2@other.test",
                "same here",
                to=f"help@example.test, {ALICE}",
                irt="b1@other.test",
            ),
        ),
        ("acme", ALICE, message(f"Alice <{ALICE}>", "a2@customer.test", "invoice please")),
        # only mentions Alice in its body: kept
        ("default", "carol@other.test", message("carol@other.test", "c1@other.test", ALICE)),
    ]
    envs = asyncio.run(store_all(cfg, pg_dsn, items))
    ids = [e["id"] for e in envs]
    assert envs[2]["thread"]["id"] == envs[1]["thread"]["id"]

    dry = cli(cfg, pg_dsn, "erase", "--address", ALICE.upper(), "--dry-run")
    assert dry["dry_run"] is True and dry["messages"] == 3  # a1, b2 (names her in To), a2
    rows = asyncio.run(query(pg_dsn, "SELECT id FROM messages WHERE state != 'notice'"))
    assert {r["id"] for r in rows} == set(ids)  # nothing changed

    report = cli(cfg, pg_dsn, "erase", "--address", ALICE)
    assert sorted(report["message_ids"]) == sorted([ids[0], ids[2], ids[3]])
    assert report["tenants"] == ["acme", "default"]
    assert report["mentioned_elsewhere"] == 1
    assert report["vacuumed"] is True
    left = asyncio.run(query(pg_dsn, "SELECT id FROM messages WHERE state != 'notice'"))
    assert {r["id"] for r in left} == {ids[1], ids[4]}
    for table in ("message_raw", "events", "dedup_keys", "thread_messages"):
        col = "id" if table == "message_raw" else "msg_id"
        gone = asyncio.run(
            query(pg_dsn, f"SELECT 1 FROM {table} WHERE {col} = ANY($1)", report["message_ids"])
        )
        assert gone == [], table
    threads = asyncio.run(query(pg_dsn, "SELECT id, contact, participants FROM threads"))
    assert all(ALICE not in (t["contact"] + t["participants"]) for t in threads)
    # Alice's own thread is gone, Bob's stays
    assert {t["id"] for t in threads} >= {envs[1]["thread"]["id"]}
    assert envs[0]["thread"]["id"] not in {t["id"] for t in threads}
    assert report["threads_deleted"] >= 1 and report["threads_updated"] >= 1
    audit = asyncio.run(query(pg_dsn, "SELECT target, detail FROM audit_log"))
    assert any(a["target"] == report["subject_hash"] for a in audit)
    assert all(ALICE not in a["target"] + a["detail"] for a in audit)
    # one subject.erased event per tenant, queued for that tenant's subscribed target
    notices = asyncio.run(
        query(
            pg_dsn,
            "SELECT e.tenant, o.target FROM events e JOIN outbox o ON o.event_id = e.id"
            " WHERE e.type = 'subject.erased' ORDER BY e.tenant",
        )
    )
    assert [(n["tenant"], n["target"]) for n in notices] == [
        ("acme", "acme-app"),
        ("default", "app"),
    ]
    # the only rows still naming her are Carol's message, which mentions her in its content
    assert set(report["residue"]) <= {"messages.envelope"}
    # a second run finds nobody
    again = cli(cfg, pg_dsn, "erase", "--address", ALICE)
    assert again["messages"] == 0


def test_purge_on_postgresql_keeps_tombstones(tmp_path: Path, pg_dsn: str) -> None:
    cfg = write_config(tmp_path, '[retention]\nbatch_size = 2\nraw = "5d"\n')
    first = [
        ("default", ALICE, message(ALICE, f"p{n}@customer.test", f"order {n}")) for n in range(5)
    ]
    envs = asyncio.run(store_all(cfg, pg_dsn, first))
    ids = [e["id"] for e in envs]
    ten_days = time.time() - 10 * 86400
    # three are old enough for the raw retention; four were received before --before
    asyncio.run(
        query(pg_dsn, "UPDATE messages SET received_at = $1 WHERE id = ANY($2)", ten_days, ids[:4])
    )

    dry = cli(cfg, pg_dsn, "purge", "--dry-run")
    assert dry["raw"] == 4 and dry["messages"] == 0
    report = cli(cfg, pg_dsn, "purge")
    assert report["raw"] == 4 and report["batches"] >= 2
    raws = asyncio.run(query(pg_dsn, "SELECT id FROM message_raw"))
    assert {r["id"] for r in raws} == {ids[4]}
    assert cli(cfg, pg_dsn, "purge")["raw"] == 0  # ``purged`` marks them: not picked again

    cutoff = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    whole = cli(cfg, pg_dsn, "purge", "--before", cutoff)
    assert whole["messages"] == 4 and whole["tombstones"] >= 4
    left = asyncio.run(query(pg_dsn, "SELECT id FROM messages WHERE state != 'notice'"))
    assert {r["id"] for r in left} == {ids[4]}
    stones = asyncio.run(
        query(pg_dsn, "SELECT sender FROM thread_messages WHERE msg_id = ANY($1)", ids[:4])
    )
    assert len(stones) == 4 and all(s["sender"] == "" for s in stones)

    # tombstones: a resend of a purged message is still a duplicate, a reply still threads
    later = asyncio.run(
        store_all(
            cfg,
            pg_dsn,
            [
                ("default", ALICE, message(ALICE, "p0@customer.test", "order 0")),
                (
                    "default",
                    ALICE,
                    message(ALICE, "r1@customer.test", "any news?", irt="p1@customer.test"),
                ),
            ],
        )
    )
    assert later[0]["duplicateOf"] == ids[0]
    assert later[1]["thread"]["id"] == envs[1]["thread"]["id"]
    assert later[1]["thread"]["matchedBy"] == "in-reply-to"


def test_governance_for_postgresql_runs_vacuum(tmp_path: Path, pg_dsn: str) -> None:
    cfg_path = write_config(tmp_path)
    cfg = load_config(cfg_path, env={"MAILGATE_STORE_DSN": pg_dsn})

    async def run() -> None:
        async with build_store(cfg) as store:
            governance = governance_for(store, tmp_path / "data")
            assert governance is not None
            await governance.full_vacuum()  # type: ignore[misc]

    asyncio.run(run())
    out = CliRunner().invoke(
        main, ["purge", "--vacuum", "-c", str(cfg_path)], env={"MAILGATE_STORE_DSN": pg_dsn}
    )
    assert out.exit_code == 0, out.output


ADMIN = "admin-token-0123456789abcdef0123456789"


async def test_delete_subject_through_the_api_of_a_postgresql_node(
    tmp_path: Path, pg_cluster: PgCluster
) -> None:
    dsn = pg_cluster.create_database()
    root = tmp_path / "mxa"
    root.mkdir()
    text = postgres_node_toml(root, "mxa") + (
        f'\n[[api.tokens]]\nname = "root"\ntoken = "{ADMIN}"\nadmin = true\n'
    )
    srv = MailgateServer(root, config_text=text, env={"MAILGATE_STORE_DSN": dsn})
    await asyncio.to_thread(srv.start)
    try:
        for n in range(3):
            raw = message(f"Alice <{ALICE}>", f"api{n}@customer.test", f"order {n}")
            await asyncio.to_thread(srv.send, raw, mail_from=ALICE)
        await asyncio.to_thread(srv.send, message("bob@other.test", "bob@other.test", "hi"))
        async with aiohttp.ClientSession() as http:
            auth = {"Authorization": f"Bearer {ADMIN}"}
            for _ in range(200):  # bounded: processed within a few hundred ms
                async with http.get(f"{srv.api_base}/v1/messages", headers=auth) as r:
                    listed = (await r.json())["data"]
                if len(listed) == 4:
                    break
                await asyncio.sleep(0.05)
            assert len(listed) == 4
            async with http.delete(f"{srv.api_base}/v1/subjects/{ALICE}", headers=auth) as r:
                assert r.status == 200, await r.text()
                report = await r.json()
            assert report["messages"] == 3 and ALICE not in json.dumps(report)
            async with http.get(f"{srv.api_base}/v1/messages", headers=auth) as r:
                left = [m for m in (await r.json())["data"] if m.get("type") != "subject.erased"]
            assert len(left) == 1
            for msg_id in report["message_ids"]:
                async with http.get(f"{srv.api_base}/v1/messages/{msg_id}", headers=auth) as r:
                    assert r.status == 404
    finally:
        await asyncio.to_thread(srv.stop)
