"""The rspamd client and the spam stage against a real, offline rspamd."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from mailgate.config import Config, SpamConfig
from mailgate.pipeline.base import Context
from mailgate.pipeline.lifecycle import Services, StageSet, build_stage
from mailgate.pipeline.rules import load_rules
from mailgate.pipeline.runner import EmptyPorts, PipelineRunner
from mailgate.pipeline.stages import registry
from mailgate.pipeline.stages.spam import STAGE as DEFAULT_STAGE
from mailgate.reply.guard import Guard, OwnDomains
from mailgate.scanners.base import ScanError
from mailgate.scanners.rspamd import MessageFacts, RspamdClient, parse_reply
from tests.support.daemon import free_port
from tests.support.rspamd import Rspamd

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "scan"
FACTS = MessageFacts(
    client_ip="192.0.2.10",
    helo="mail.example.org",
    mail_from="alice@example.org",
    rcpt_to=("support@example.test",),
    queue_id="01TEST",
)


def client(url: str, timeout: float = 3.0) -> RspamdClient:
    return RspamdClient(SpamConfig(engine="rspamd", url=url, timeout=timeout))


async def test_gtube_ham_spammy(rspamd_running: Rspamd) -> None:
    c = client(rspamd_running.url)
    try:
        gtube = await c.check((FIXTURES / "gtube.eml").read_bytes(), FACTS)
        ham = await c.check((FIXTURES / "ham.eml").read_bytes(), FACTS)
        spammy = await c.check((FIXTURES / "spammy.eml").read_bytes(), FACTS)
    finally:
        await c.close()
    assert (gtube.action, gtube.score, gtube.required) == ("reject", 15.0, 15.0)
    assert ham.action == "no action" and ham.score < 3
    assert spammy.action == "add header" and spammy.score >= 6
    names = {s.name for s in spammy.symbols}
    assert {"R_UNDISC_RCPT", "HTTP_TO_IP"} <= names
    assert all(s.description for s in spammy.symbols if s.name == "HTTP_TO_IP")


async def test_down_and_garbage() -> None:
    c = client(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(ScanError) as err:
            await c.check(b"Subject: x\r\n\r\nhi\r\n")
    finally:
        await c.close()
    assert err.value.kind == "unavailable"
    for body in (b"<html>", b"[]", b'{"score": "high", "action": "reject"}', b'{"error": "x"}'):
        with pytest.raises(ScanError) as err:
            parse_reply(body)
        assert err.value.kind == "protocol"


def test_facts_never_inject_headers() -> None:
    facts = MessageFacts(helo="evil\r\nPassword: x", rcpt_to=("a@example.test", "b@example.test"))
    headers = facts.headers()
    assert "Helo" not in headers and "Password" not in headers
    assert headers.getall("Rcpt") == ["a@example.test", "b@example.test"]
    assert headers["Hostname"] == "unknown"


def _ctx(cfg: Config) -> Context:
    return Context(
        config=cfg.pipeline, root=cfg, ports=EmptyPorts(), rules=load_rules(cfg), msg_id="m1"
    )


def _raw(data: bytes) -> Callable[[str], Awaitable[bytes]]:
    async def get(msg_id: str) -> bytes:
        return data

    return get


def _env(raw: bytes) -> Any:
    from mailgate.mime.parse import parse_message

    env: Any = parse_message(raw)
    env["id"] = "m1"
    env["envelope"] = {
        "mailFrom": "alice@example.org",
        "rcptTo": ["support@example.test"],
        "clientIp": "192.0.2.10",
        "helo": "mail.example.org",
        "tls": False,
    }
    return env


@pytest.mark.parametrize(
    ("fixture", "flagged", "held"),
    [("gtube.eml", True, True), ("spammy.eml", True, False), ("ham.eml", False, False)],
)
async def test_stage_follows_rspamd_action(
    rspamd_running: Rspamd, fixture: str, flagged: bool, held: bool
) -> None:
    raw = (FIXTURES / fixture).read_bytes()
    cfg = Config(spam=SpamConfig(engine="rspamd", url=rspamd_running.url))
    stages = StageSet(cfg, Services(raw_message=_raw(raw)), registry())
    await stages.start()
    try:
        env = _env(raw)
        ctx = _ctx(cfg)
        assert await stages.stages["spam"].run(env, ctx) is None
    finally:
        await stages.stop()
    spam = env["spam"]
    assert spam["engine"] == "rspamd" and spam["error"] is None
    assert spam["flagged"] is flagged
    assert [q.reason for q in ctx.quarantine] == (["spam"] if held else [])
    guard = Guard(OwnDomains(cfg.domains))
    skip = guard.check(env)
    if flagged:
        assert skip is not None and skip.reason == "spam"


async def test_thresholds_and_rules(rspamd_running: Rspamd) -> None:
    """``quarantine_at`` replaces rspamd's action; rules see score, action and symbols."""
    raw = (FIXTURES / "spammy.eml").read_bytes()
    rules = [
        {
            "name": "lottery",
            "if": {"spam.symbol": "R_UNDISC_RCPT", "spam.action": "add header"},
            "then": {"queue": "abuse"},
        }
    ]
    cfg_data = Config(
        spam=SpamConfig(engine="rspamd", url=rspamd_running.url, quarantine_at=6.0),
        rules=rules,
    )
    stages = StageSet(cfg_data, Services(raw_message=_raw(raw)), registry())
    await stages.start()
    try:
        runner = PipelineRunner(cfg_data, EmptyPorts(), stages=stages.stages)
        env = _env(raw)
        out = await runner.process(env)
    finally:
        await stages.stop()
    assert out.state == "quarantined"
    assert env["quarantine"]["reason"] == "spam"
    assert env["spam"]["flagged"] is True
    assert [h.rule.name for h in out.hits if h.matched] == ["lottery"]


async def test_outage_continues_with_error() -> None:
    cfg = Config(spam=SpamConfig(engine="rspamd", url=f"http://127.0.0.1:{free_port()}"))
    stage = build_stage(DEFAULT_STAGE, cfg, Services(raw_message=_raw(b"Subject: x\r\n\r\nhi\r\n")))
    env = _env(b"Subject: x\r\n\r\nhi\r\n")
    ctx = _ctx(cfg)
    try:
        assert await stage.run(env, ctx) is None
    finally:
        await stage.stop()  # type: ignore[attr-defined]
    assert env["spam"]["score"] is None and env["spam"]["flagged"] is False
    assert "unavailable" in env["spam"]["error"]
    assert ctx.quarantine == []
