"""``mailgate db check`` on PostgreSQL (issue 15): schema current, raw messages readable at
their recorded size, attachments derivable from the raw message (their source of truth there);
damage is reported with exit status 1. A throwaway cluster (tests/support/postgres.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path

import asyncpg
from click.testing import CliRunner

from mailgate.app import build_store, load_config
from mailgate.cli import main
from mailgate.mime.parse import parse_message
from mailgate.pipeline.runner import PipelineRunner
from mailgate.store.base import SpoolRecord

PDF = b"%PDF-1.4 a small attachment body\n" * 20


def raw_message(n: int) -> bytes:
    return (
        b"From: Alice <alice@customer.test>\r\nTo: help@example.test\r\n"
        b"Subject: invoice " + str(n).encode() + b"\r\n"
        b"Message-ID: <m" + str(n).encode() + b"@customer.test>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nplease see the attached invoice\r\n"
        b'--b\r\nContent-Type: application/pdf; name="inv.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(PDF + str(n).encode())
        + b"--b--\r\n"
    )


def write_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "mailgate.toml"
    cfg.write_text(
        '[[domains]]\nname = "example.test"\ncatch_all = true\n'
        f'[store]\nbackend = "postgresql"\ndata_dir = "{tmp_path / "data"}"\n'
        '[[api.tokens]]\nname = "ops"\ntoken = "test-token-0123456789abcdef0123456789"\n'
    )
    return cfg


async def store_messages(cfg_path: Path, dsn: str, count: int) -> list[str]:
    cfg = load_config(cfg_path, env={"MAILGATE_STORE_DSN": dsn})
    ids: list[str] = []
    async with build_store(cfg) as store:
        runner = PipelineRunner(cfg, store)
        for n in range(count):
            raw = raw_message(n)
            env = parse_message(raw)
            env.update(id=f"msg_{n:026d}", timestamp="2026-12-05T00:00:00Z", tenant="default")
            env["envelope"] = {"mailFrom": "alice@customer.test", "rcptTo": ["help@example.test"]}
            await store.spool(
                SpoolRecord(
                    id=env["id"],
                    received_at=time.time(),
                    mail_from="alice@customer.test",
                    rcpt_to=["help@example.test"],
                    client_ip="203.0.113.5",
                    helo="mx.customer.test",
                    tls=False,
                    raw=raw,
                )
            )
            outcome = await runner.process(env)
            await store.complete(env["id"], env, outcome.intents, state=outcome.state)
            ids.append(env["id"])
    return ids


def check(cfg: Path, dsn: str) -> tuple[int, dict[str, object]]:
    out = CliRunner().invoke(
        main, ["db", "check", "--json", "-c", str(cfg)], env={"MAILGATE_STORE_DSN": dsn}
    )
    return out.exit_code, json.loads(out.output)


def test_db_check_on_postgresql_finds_damage(tmp_path: Path, pg_dsn: str) -> None:
    cfg = write_config(tmp_path)
    ids = asyncio.run(store_messages(cfg, pg_dsn, 3))
    code, report = check(cfg, pg_dsn)
    assert code == 0, report
    assert report["ok"] is True and report["messages"] == 3 and report["raw_checked"] == 3
    assert str(report["integrity"]).startswith("schema ")

    async def damage() -> None:
        conn = await asyncpg.connect(pg_dsn)
        try:
            # a truncated raw message: wrong size, and its attachment no longer derivable
            await conn.execute(
                "UPDATE message_raw SET raw = substring(raw from 1 for 200) WHERE id = $1", ids[0]
            )
            # an attachment row naming bytes the raw message never held
            await conn.execute(
                "INSERT INTO attachments (id, msg_id, sha256, filename, content_type, size)"
                " VALUES ('att_bogus', $1, $2, 'x.bin', 'application/octet-stream', 3)",
                ids[1],
                "ab" * 32,
            )
        finally:
            await conn.close()

    asyncio.run(damage())
    code, report = check(cfg, pg_dsn)
    assert code == 1
    problems = "\n".join(map(str, report["problems"]))  # type: ignore[call-overload]
    assert f"{ids[0]}: raw is 200 bytes" in problems
    assert f"{ids[0]}: attachment" in problems and "not derivable" in problems
    assert f"{ids[1]}: attachment abababababababab" in problems
    assert ids[2] not in problems


def test_db_check_on_postgresql_refuses_an_unmigrated_schema(tmp_path: Path, pg_dsn: str) -> None:
    cfg = write_config(tmp_path)
    code, report = check(cfg, pg_dsn)
    assert code == 1
    assert "pending" in "\n".join(map(str, report["problems"]))  # type: ignore[call-overload]
