"""``mailgate dlq …`` through click's CliRunner against a real store in a tmp dir."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from click.testing import CliRunner

from mailgate.cli.dlq import dlq_group
from mailgate.store.delivery import AttemptOutcome, event_id_for
from tests.support.delivery import SECRET, open_store, publish


def make_config(tmp_path: Path) -> Path:
    path = tmp_path / "mailgate.toml"
    path.write_text(
        f'[store]\ndata_dir = "{tmp_path / "data"}"\n\n'
        f'[[webhooks]]\nname = "hook"\nurl = "http://127.0.0.1:9/hook"\nsecrets = ["{SECRET}"]\n'
    )
    return path


def seed_dead(tmp_path: Path, n: int) -> list[str]:
    async def body() -> list[str]:
        async with open_store(tmp_path / "data") as store:
            ids = [await publish(store) for _ in range(n)]
            for item in await store.claim_outbox("hook", n, owner="t", lease=30):
                await store.finish_attempt(
                    item,
                    AttemptOutcome(
                        "retry", status=503, latency=0.01, error="HTTP 503", next_attempt_at=0
                    ),
                    owner="t",
                )
            for item in await store.claim_outbox("hook", n, owner="t", lease=30):
                await store.finish_attempt(
                    item,
                    AttemptOutcome("dead", status=500, latency=0.02, error="HTTP 500: boom"),
                    owner="t",
                )
            return ids

    return asyncio.run(body())


def test_list_show_retry_purge(tmp_path: Path) -> None:
    cfg = str(make_config(tmp_path))
    ids = seed_dead(tmp_path, 3)
    r = CliRunner().invoke(dlq_group, ["list", "-c", cfg, "--json"])
    assert r.exit_code == 0, r.output
    listed = json.loads(r.output)
    assert [e["eventId"] for e in listed] == [event_id_for(m) for m in ids]
    assert listed[0]["attempts"] == 2 and listed[0]["lastStatus"] == 500

    r = CliRunner().invoke(dlq_group, ["list", "-c", cfg])
    assert r.exit_code == 0 and event_id_for(ids[0]) in r.output and "HTTP 500" in r.output

    first = str(listed[0]["id"])
    r = CliRunner().invoke(dlq_group, ["show", first, "-c", cfg, "--json"])
    shown = json.loads(r.output)
    assert [h["status"] for h in shown["history"]] == [503, 500]
    assert [h["outcome"] for h in shown["history"]] == ["retry", "dead"]
    r = CliRunner().invoke(dlq_group, ["show", first, "-c", cfg])
    assert r.exit_code == 0 and "#2" in r.output and "boom" in r.output

    r = CliRunner().invoke(dlq_group, ["retry", first, "-c", cfg])
    assert r.exit_code == 0 and "requeued 1 delivery" in r.output
    r = CliRunner().invoke(dlq_group, ["retry", first, "-c", cfg])
    assert r.exit_code == 1 and "not in the dead-letter queue" in r.output
    r = CliRunner().invoke(dlq_group, ["retry", "--all", "-c", cfg])
    assert r.exit_code == 0 and "requeued 2 deliveries" in r.output
    r = CliRunner().invoke(dlq_group, ["list", "-c", cfg])
    assert "empty" in r.output

    seed_dead(tmp_path, 1)  # the requeued rows are pending again; one new dead one
    r = CliRunner().invoke(dlq_group, ["purge", "--older-than", "1h", "-c", cfg])
    assert r.exit_code == 0 and "purged 0" in r.output
    r = CliRunner().invoke(dlq_group, ["purge", "--older-than", "0s", "-c", cfg])
    assert r.exit_code == 0 and "purged 1 dead delivery" in r.output


def test_user_mistakes_are_one_line_errors(tmp_path: Path) -> None:
    cfg = str(make_config(tmp_path))
    seed_dead(tmp_path, 0)
    r = CliRunner().invoke(dlq_group, ["show", "999", "-c", cfg])
    assert r.exit_code == 1 and "not found" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(dlq_group, ["show", "abc", "-c", cfg])
    assert r.exit_code == 2 and "not a DLQ id" in r.output
    r = CliRunner().invoke(dlq_group, ["retry", "-c", cfg])
    assert r.exit_code == 2 and "--all" in r.output
    r = CliRunner().invoke(dlq_group, ["purge", "--older-than", "soon", "-c", cfg])
    assert r.exit_code == 2
    r = CliRunner().invoke(dlq_group, ["list", "-c", str(tmp_path / "missing.toml")])
    assert r.exit_code == 1 and "not found" in r.output


def test_enable_and_disable_targets(tmp_path: Path) -> None:
    cfg = str(make_config(tmp_path))
    seed_dead(tmp_path, 0)
    r = CliRunner().invoke(dlq_group, ["disable-target", "hook", "-c", cfg])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(dlq_group, ["targets", "-c", cfg, "--json"])
    assert json.loads(r.output) == {"disabled": {"hook": "disabled by an operator"}}
    r = CliRunner().invoke(dlq_group, ["enable-target", "hook", "-c", cfg])
    assert r.exit_code == 0 and "enabled hook" in r.output
    r = CliRunner().invoke(dlq_group, ["enable-target", "hook", "-c", cfg])
    assert r.exit_code == 1 and "not disabled" in r.output
    r = CliRunner().invoke(dlq_group, ["disable-target", "nope", "-c", cfg])
    assert r.exit_code == 1 and "expected one of hook" in r.output
    r = CliRunner().invoke(dlq_group, ["targets", "-c", cfg])
    assert "no disabled targets" in r.output
