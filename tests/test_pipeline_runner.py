"""The runner: order, defaults, verdicts to states and intents, timeouts, logs, tenants."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from mailgate.config import WebhookConfig
from mailgate.pipeline.base import Context, Verdict
from mailgate.pipeline.runner import EmptyPorts, PipelineRunner, StageTimeout
from mailgate.pipeline.stages import registry
from mailgate.store.delivery import PublishIntent
from mailgate.store.pipeline import DedupIntent, QuarantineIntent, ThreadIntent
from mailgate.store.sqlite import SqliteStore
from tests.support.pipeline import ingest, make_config, make_env, store

__all__ = ["store"]

HOOKS = [
    WebhookConfig(url="http://127.0.0.1:9/a", secrets=["whsec_x"], tenant="default", name="main"),
    WebhookConfig(url="http://127.0.0.1:9/b", secrets=["whsec_x"], tenant="default", name="ops"),
    WebhookConfig(url="http://127.0.0.1:9/c", secrets=["whsec_x"], tenant="acme", name=""),
]


async def test_default_route_and_publish(store: SqliteStore) -> None:
    runner = PipelineRunner(make_config(webhooks=HOOKS), store)
    env = make_env()
    out = await ingest(store, runner, env)
    assert out.state == "processed"
    assert env["queue"] == "triage"
    assert env["route"]["rule"] is None
    assert env["route"]["confidence"] == 0.0
    assert "no rule matched" in env["route"]["reasons"][-1]
    assert env["intent"] == "human"
    assert env["priority"] == "normal"
    assert env["duplicateOf"] is None and env["quarantine"] is None
    kinds = [type(i) for i in out.intents]
    # two dedup entries: the Message-ID's first message, and this content under it
    assert kinds == [DedupIntent, DedupIntent, ThreadIntent, PublishIntent]
    publish = out.intents[-1]
    assert isinstance(publish, PublishIntent)
    assert publish.targets == ("main", "ops")
    assert publish.ordering_key == env["thread"]["id"]
    stored = await store.get_envelope(env["id"])
    assert stored["queue"] == "triage"


async def test_tenant_isolation_of_targets(store: SqliteStore) -> None:
    rules = [
        {"name": "all-to-main", "then": {"webhooks": ["main"], "tags": ["x"]}},
    ]
    runner = PipelineRunner(make_config(rules, webhooks=HOOKS), store)
    acme = make_env(tenant="acme", to=["help@acme.support.example.test"])
    out = await ingest(store, runner, acme)
    publish = out.intents[-1]
    assert isinstance(publish, PublishIntent)
    # the rule names a default-tenant target: never used for acme's mail
    assert publish.targets == ()
    assert any("not a target of tenant 'acme'" in r for s in out.results for r in s.reasons)
    plain = make_env(tenant="acme")
    out2 = await PipelineRunner(make_config(webhooks=HOOKS), store).process(plain)
    assert out2.intents[-1] == PublishIntent(
        targets=("http://127.0.0.1:9/c",), ordering_key=plain["thread"]["id"]
    )


async def test_rule_webhooks_narrow_targets(store: SqliteStore) -> None:
    rules = [{"name": "ops", "if": {"subject": "outage"}, "then": {"webhooks": ["ops"]}}]
    runner = PipelineRunner(make_config(rules, webhooks=HOOKS), store)
    out = await runner.process(make_env(subject="Outage in EU"))
    assert out.targets == ("ops",)
    out = await runner.process(make_env(subject="hello"))
    assert out.targets == ("main", "ops")


async def test_quarantine_verdict_state_and_no_publish(store: SqliteStore) -> None:
    runner = PipelineRunner(make_config(), store)
    env = make_env()
    env["authAction"] = {"action": "quarantine", "reason": "dmarc=fail policy=quarantine"}
    env["dmarc"] = {"passed": False, "result": "fail", "domain": "customer.test"}
    out = await ingest(store, runner, env)
    assert out.state == "quarantined"
    assert env["quarantine"] == {"reason": "dmarc", "detail": "dmarc=fail policy=quarantine"}
    assert not any(isinstance(i, PublishIntent) for i in out.intents)
    assert isinstance(out.intents[-1], QuarantineIntent)
    rec = await store.get_quarantine(env["id"])
    assert rec.reason == "dmarc" and rec.state == "quarantined"


async def test_auth_quarantine_reason(store: SqliteStore) -> None:
    runner = PipelineRunner(make_config(), store)
    env = make_env()
    env["authAction"] = {"action": "quarantine", "reason": "spf=fail"}
    out = await runner.process(env)
    assert out.state == "quarantined"
    assert env["quarantine"]["reason"] == "auth"


async def test_rule_quarantine_and_reply(store: SqliteStore) -> None:
    rules = [
        {
            "name": "legal",
            "if": {"subject": "/subpoena/i"},
            "then": {"quarantine": "legal", "reply": False},
        }
    ]
    runner = PipelineRunner(make_config(rules), store)
    env = make_env(subject="SUBPOENA attached")
    out = await runner.process(env)
    assert out.state == "quarantined"
    assert env["quarantine"] == {"reason": "legal", "detail": "rule legal"}
    assert out.reply is False


class _Slow:
    name = "slow"
    description = "sleeps"

    async def run(self, env: dict[str, Any], ctx: Context) -> Verdict | None:
        await asyncio.sleep(5)
        return None


class _Boom:
    name = "boom"
    description = "raises"

    async def run(self, env: dict[str, Any], ctx: Context) -> Verdict | None:
        raise RuntimeError("kaput")


async def test_stage_timeout_fails_the_run() -> None:
    cfg = make_config(stages=["slow", "quarantine"], stage_timeout=0.05)
    runner = PipelineRunner(cfg, EmptyPorts(), stages={**registry(), "slow": _Slow()})
    with pytest.raises(StageTimeout):
        await runner.process(make_env())


async def test_stage_error_propagates(caplog: pytest.LogCaptureFixture) -> None:
    cfg = make_config(stages=["intent", "boom", "quarantine"])
    runner = PipelineRunner(cfg, EmptyPorts(), stages={**registry(), "boom": _Boom()})
    env = make_env()
    with caplog.at_level(logging.DEBUG, logger="mailgate.pipeline"), pytest.raises(RuntimeError):
        await runner.process(env)
    facts = [
        (r.getMessage(), r.fields["stage"], r.fields["verdict"], r.fields["reason"])  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "mailgate.pipeline"
    ]
    assert ("stage done", "intent", "continue", "human: no automation signal") in facts
    assert ("stage failed", "boom", "error", "RuntimeError") in facts


async def test_one_log_line_per_stage(caplog: pytest.LogCaptureFixture) -> None:
    runner = PipelineRunner(make_config(), EmptyPorts())
    env = make_env()
    with caplog.at_level(logging.DEBUG, logger="mailgate.pipeline"):
        await runner.process(env)
    records = [r for r in caplog.records if r.name == "mailgate.pipeline"]
    stages = [f"stage={r.fields['stage']}" for r in records]  # type: ignore[attr-defined]
    assert (
        stages
        == [
            "stage=dedup",
            "stage=intent",
            "stage=thread",
            "stage=antivirus",
            "stage=spam",
            "stage=scan",
            "stage=classify",
            "stage=extract",
            "stage=route",
            "stage=quarantine",
            "stage=respond",
        ][: len(stages)]
    )
    assert all(r.getMessage() in ("stage done", "stage skipped") for r in records)
    assert all(r.msg_id == env["id"] for r in caplog.records if r.name == "mailgate.pipeline")  # type: ignore[attr-defined]


async def test_replayed_envelope_starts_clean() -> None:
    runner = PipelineRunner(make_config(), EmptyPorts())
    env = make_env()
    env["queue"] = "old"
    env["tags"] = ["stale"]
    env["quarantine"] = {"reason": "x", "detail": ""}
    await runner.process(env, mode="replay")
    assert env["queue"] == "triage" and env["tags"] == [] and env["quarantine"] is None


def test_unknown_stage_is_a_config_error(tmp_path: Any) -> None:
    from mailgate.app import load_config
    from mailgate.config import ConfigError

    p = tmp_path / "m.toml"
    p.write_text('[pipeline]\nstages = ["dedup", "classfy", "quarantine"]\n')
    with pytest.raises(ConfigError, match=r"pipeline.stages\[1\] = 'classfy'"):
        load_config(p, env={})
    p.write_text('[pipeline]\nstages = ["dedup", "route"]\n')
    with pytest.raises(ConfigError, match="'quarantine' in the list"):
        load_config(p, env={})
    p.write_text('[pipeline]\nstages = ["dedup", "route", "quarantine", "respond"]\n')
    assert load_config(p, env={}).pipeline.stages[-1] == "respond"
