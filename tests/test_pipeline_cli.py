"""Operator CLI: quarantine list/show/release/delete, audit, replay, rules test/eval."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mailgate.cli.audit import audit_group
from mailgate.cli.quarantine import quarantine_group
from mailgate.cli.replay import replay_cmd
from mailgate.cli.rules import rules_group
from mailgate.config import load_config
from mailgate.pipeline.runner import PipelineRunner
from mailgate.store.sqlite import SqliteStore
from tests.support.pipeline import ingest, make_env

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "rules"

CONFIG = """\
[store]
data_dir = "{data}"

[pipeline]
rules_file = "rules.toml"

[[webhooks]]
url = "http://127.0.0.1:9/hook"
secrets = ["whsec_FJaOVz3OfAZ89vzs08yza2c+TdAULNLHr7kLwQ/gpEQ="]
name = "main"
tenant = "default"
"""


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Any]:
    shutil.copy(FIXTURES / "rules.toml", tmp_path / "rules.toml")
    cfg_path = tmp_path / "mailgate.toml"
    cfg_path.write_text(CONFIG.format(data=tmp_path / "data"))
    cfg = load_config(cfg_path, env={})
    ids: dict[str, str] = {}

    async def populate() -> None:
        async with SqliteStore(cfg.store.data_dir) as store:
            runner = PipelineRunner(cfg, store)
            spoofed = make_env(subject="Invoice overdue", sender="ceo@bigco.test")
            spoofed["authAction"] = {"action": "quarantine", "reason": "dmarc=fail (p=quarantine)"}
            await ingest(store, runner, spoofed)
            exe = make_env(
                subject="Scanned document",
                attachments=[
                    {
                        "filename": "scan.pdf",
                        "contentType": "application/pdf",
                        "detectedType": "application/x-msdownload",
                        "size": 12000,
                    }
                ],
            )
            await ingest(store, runner, exe)
            hello = make_env(subject="hello there", text="just saying hello")
            await ingest(store, runner, hello)
            ids.update(dmarc=spoofed["id"], exe=exe["id"], hello=hello["id"])

    asyncio.run(populate())
    return {"path": str(cfg_path), "cfg": cfg, "ids": ids, "dir": tmp_path}


def invoke(cmd: Any, *args: str) -> Any:
    result = CliRunner().invoke(cmd, list(args), catch_exceptions=False)
    return result


def db_query(cfg: Any, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    import sqlite3

    conn = sqlite3.connect(Path(cfg.store.data_dir) / "mailgate.sqlite")
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def test_quarantine_list_show_release_delete_audit(setup: dict[str, Any]) -> None:
    cfg_path, ids = setup["path"], setup["ids"]
    res = invoke(quarantine_group, "list", "-c", cfg_path, "--json")
    assert res.exit_code == 0, res.output
    listed = {m["id"]: m for m in json.loads(res.output)}
    assert set(listed) == {ids["dmarc"], ids["exe"]}
    assert listed[ids["dmarc"]]["reason"] == "dmarc"
    assert listed[ids["exe"]]["reason"] == "executable"
    res = invoke(quarantine_group, "list", "-c", cfg_path, "--json", "--reason", "executable")
    assert [m["id"] for m in json.loads(res.output)] == [ids["exe"]]
    res = invoke(quarantine_group, "list", "-c", cfg_path)
    assert ids["dmarc"] in res.output and "dmarc" in res.output

    res = invoke(quarantine_group, "show", "-c", cfg_path, ids["exe"], "--json")
    shown = json.loads(res.output)
    assert shown["envelope"]["quarantine"]["reason"] == "executable"
    assert "application/x-msdownload" in shown["envelope"]["quarantine"]["detail"]
    assert shown["size"] > 0  # raw bytes kept
    assert db_query(
        setup["cfg"], "SELECT COUNT(*) FROM events WHERE msg_id = ?", (ids["dmarc"],)
    ) == [(0,)]

    res = invoke(
        quarantine_group, "release", "-c", cfg_path, ids["dmarc"], "--actor", "olga", "--json"
    )
    assert res.exit_code == 0, res.output
    released = json.loads(res.output)
    assert released["delivered"] is True and released["targets"] == ["main"]
    assert released["queue"] == "billing"  # the rest of the pipeline ran with the current rules
    assert db_query(setup["cfg"], "SELECT state FROM messages WHERE id = ?", (ids["dmarc"],)) == [
        ("processed",)
    ]
    assert db_query(
        setup["cfg"], "SELECT COUNT(*) FROM events WHERE msg_id = ?", (ids["dmarc"],)
    ) == [(1,)]
    assert db_query(
        setup["cfg"],
        "SELECT o.target FROM outbox o JOIN events e ON e.id = o.event_id WHERE e.msg_id = ?",
        (ids["dmarc"],),
    ) == [("main",)]
    # released once: a second release is a one-line error
    res = CliRunner().invoke(quarantine_group, ["release", "-c", cfg_path, ids["dmarc"]])
    assert res.exit_code == 1 and "not quarantined" in res.output

    res = invoke(quarantine_group, "delete", "-c", cfg_path, ids["exe"], "--actor", "olga")
    assert res.exit_code == 0
    assert db_query(setup["cfg"], "SELECT COUNT(*) FROM messages WHERE id = ?", (ids["exe"],)) == [
        (0,)
    ]
    assert db_query(
        setup["cfg"], "SELECT COUNT(*) FROM message_raw WHERE id = ?", (ids["exe"],)
    ) == [(0,)]
    res = CliRunner().invoke(quarantine_group, ["delete", "-c", cfg_path, ids["hello"]])
    assert res.exit_code == 1  # not quarantined: refused

    res = invoke(audit_group, "list", "-c", cfg_path, "--json")
    audit = json.loads(res.output)
    assert [(a["action"], a["target"], a["actor"]) for a in audit] == [
        ("quarantine.delete", ids["exe"], "olga"),
        ("quarantine.release", ids["dmarc"], "olga"),
    ]
    assert audit[1]["detail"] == {"reason": "dmarc"}
    text = invoke(audit_group, "list", "-c", cfg_path).output.splitlines()
    assert len(text) == 2  # one line per entry, fields not a Python dict
    assert "{'" not in text[1] and "detail.reason=dmarc" in text[1].split()
    assert f"target={ids['dmarc']}" in text[1].split() and "actor=olga" in text[1].split()


def test_replay_dry_run_diff_then_apply(setup: dict[str, Any]) -> None:
    cfg_path, ids = setup["path"], setup["ids"]
    res = invoke(replay_cmd, "-c", cfg_path, "--dry-run", "--json")
    assert json.loads(res.output)["changed"] == 0  # same rules: nothing changes
    with open(setup["dir"] / "rules.toml", "a") as fh:
        fh.write(
            '\n[[rules]]\nname = "greetings"\nif = { subject = "hello" }\n'
            'then = { queue = "sales", tags = ["lead"] }\n'
        )
    res = invoke(replay_cmd, "-c", cfg_path, "--dry-run", "--json")
    data = json.loads(res.output)
    assert data["examined"] == 3 and data["changed"] == 1
    change = data["messages"][0]
    assert change["id"] == ids["hello"]
    assert change["changes"]["queue"] == {"old": "triage", "new": "sales"}
    assert change["changes"]["tags"] == {"old": [], "new": ["lead"]}
    assert change["changes"]["rule"] == {"old": None, "new": "greetings"}
    res = invoke(replay_cmd, "-c", cfg_path, "--dry-run")
    assert f"{ids['hello']}  queue triage -> sales  tags [] -> [lead]" in res.output
    assert "3 messages examined, 1 would change" in res.output
    # dry run wrote nothing
    env = json.loads(
        db_query(setup["cfg"], "SELECT envelope FROM messages WHERE id = ?", (ids["hello"],))[0][0]
    )
    assert env["queue"] == "triage"
    res = invoke(replay_cmd, "-c", cfg_path, ids["hello"], "--redeliver", "--actor", "ci")
    assert "1 messages examined, 1 changed" in res.output
    env = json.loads(
        db_query(setup["cfg"], "SELECT envelope FROM messages WHERE id = ?", (ids["hello"],))[0][0]
    )
    assert env["queue"] == "sales" and env["tags"] == ["lead"]
    types = db_query(
        setup["cfg"], "SELECT type FROM events WHERE msg_id = ? ORDER BY seq", (ids["hello"],)
    )
    assert types == [("message.received",), ("message.rerouted",)]
    audit = json.loads(invoke(audit_group, "list", "-c", cfg_path, "--json").output)
    assert audit[0]["action"] == "replay" and audit[0]["actor"] == "ci"
    # quarantined messages keep their state
    assert db_query(setup["cfg"], "SELECT state FROM messages WHERE id = ?", (ids["exe"],)) == [
        ("quarantined",)
    ]
    res = CliRunner().invoke(replay_cmd, ["-c", cfg_path, "msg_nope"])
    assert res.exit_code == 1 and "msg_nope" in res.output


def test_replay_since(setup: dict[str, Any]) -> None:
    res = invoke(replay_cmd, "-c", setup["path"], "--dry-run", "--json", "--since", "2999-01-01")
    assert json.loads(res.output)["examined"] == 0
    res = invoke(replay_cmd, "-c", setup["path"], "--dry-run", "--json", "--since", "1h")
    assert json.loads(res.output)["examined"] == 3
    res = CliRunner().invoke(replay_cmd, ["-c", setup["path"], "--since", "last tuesday"])
    assert res.exit_code == 2 and "expected a date" in res.output


def test_rules_test_prints_decision_and_reasons(setup: dict[str, Any]) -> None:
    res = invoke(rules_group, "test", "-c", setup["path"], str(FIXTURES / "billing-refund.eml"))
    assert res.exit_code == 0, res.output
    out = res.output
    assert "+  billing" in out and "subject ~ /invoice|refund|billing/i ('Refund')" in out
    assert "x  security" in out
    assert "decision  queue=billing tags=['billing'] priority=high rule=billing" in out
    assert "4111" not in out  # the card number is masked everywhere
    res = invoke(
        rules_group, "test", "-c", setup["path"], str(FIXTURES / "ooo-outlook.eml"), "--json"
    )
    data = json.loads(res.output)
    assert data["decision"]["intent"] == "out-of-office"
    assert data["decision"]["queue"] == "automated"
    assert data["decision"]["reply"] is False
    assert [s["stage"] for s in data["stages"]][:3] == ["dedup", "intent", "thread"]
    assert data["rules"][1]["skipped"] == "after stop in rule 'automated'"
    # nothing was stored
    assert db_query(setup["cfg"], "SELECT COUNT(*) FROM messages") == [(3,)]


def test_rules_eval_precision_recall_misrouted(setup: dict[str, Any]) -> None:
    res = invoke(
        rules_group, "eval", "-c", setup["path"], str(FIXTURES / "labeled.jsonl"), "--json"
    )
    data = json.loads(res.output)
    assert data["total"] == 10
    assert data["queues"]["automated"]["precision"] == 1.0
    assert data["queues"]["billing"] == {
        "precision": 2 / 3,
        "recall": 1.0,
        "tp": 2,
        "fp": 1,
        "fn": 0,
    }
    assert data["queues"]["security"]["recall"] == 0.5
    assert [m["path"].rsplit("/", 1)[1] for m in data["misrouted"]] == ["security-misrouted.eml"]
    res = invoke(rules_group, "eval", "-c", setup["path"], str(FIXTURES / "labeled.jsonl"))
    assert "billing                   0.67    1.00" in res.output
    assert "misrouted" in res.output and "queue security -> billing" in res.output


def test_rules_eval_bad_line(tmp_path: Path, setup: dict[str, Any]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"path": "missing.eml", "queue": "x"}\n')
    res = CliRunner().invoke(rules_group, ["eval", "-c", setup["path"], str(bad)])
    assert res.exit_code == 1 and "missing.eml: file not found" in res.output


def test_replay_requeues_dead_messages(setup: dict[str, Any]) -> None:
    cfg_path, ids = setup["path"], setup["ids"]

    async def kill() -> str:
        from mailgate.store.base import SpoolRecord

        async with SqliteStore(setup["cfg"].store.data_dir) as store:
            await store.spool(
                SpoolRecord(
                    id="msg_01DEAD00000000000000000000",
                    received_at=1.0,
                    mail_from="a@b.test",
                    rcpt_to=["support@example.test"],
                    client_ip="",
                    helo="",
                    tls=False,
                    raw=b"x",
                )
            )
            state = await store.fail("msg_01DEAD00000000000000000000", "boom", max_attempts=1)
            assert state == "dead"
        return "msg_01DEAD00000000000000000000"

    dead_id = asyncio.run(kill())
    res = invoke(replay_cmd, "-c", cfg_path, "--dead", "--dry-run", "--json")
    assert json.loads(res.output)["requeued"] == [dead_id]
    assert db_query(setup["cfg"], "SELECT state FROM messages WHERE id = ?", (dead_id,)) == [
        ("dead",)
    ]
    res = invoke(replay_cmd, "-c", cfg_path, dead_id, "--actor", "ops")
    assert f"{dead_id}  dead -> requeued" in res.output
    assert db_query(
        setup["cfg"], "SELECT state, attempts FROM messages WHERE id = ?", (dead_id,)
    ) == [("spooled", 0)]
    audit = json.loads(invoke(audit_group, "list", "-c", cfg_path, "--json").output)
    assert (audit[0]["action"], audit[0]["target"], audit[0]["actor"]) == (
        "replay.requeue",
        dead_id,
        "ops",
    )
    assert ids  # the processed ones were examined but unchanged
