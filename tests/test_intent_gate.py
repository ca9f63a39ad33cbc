"""The literal gate of the intent body patterns: a body holding none of a pattern's required
literals skips the regex, so every match must hold one."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailgate.pipeline.intent_signals import (
    SIGNALS,
    Body,
    body_gate,
    own_of,
    required_literals,
    rx,
)
from mailgate.pipeline.stages.intent import decide, facts_of

_BODY_PATTERNS = sorted(
    {t.pattern for s in SIGNALS for t in (getattr(s.test, "tests", None) or (s.test,))
     if isinstance(t, Body)}
)  # fmt: skip


@pytest.mark.parametrize("pattern", _BODY_PATTERNS)
def test_every_body_pattern_has_a_gate(pattern: str) -> None:
    gate = body_gate(pattern)
    assert gate and min(map(len, gate)) >= 2


@pytest.mark.parametrize("pattern", _BODY_PATTERNS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_match_of_a_body_pattern_holds_a_gate_literal(pattern: str, data: Any) -> None:
    regex = rx(pattern)
    text = data.draw(st.from_regex(regex))
    m = regex.search(text)
    assert m is not None
    gate = body_gate(pattern)
    assert gate is not None and any(lit in m.group(0) for lit in gate), (m.group(0), gate)


@pytest.mark.parametrize(
    ("pattern", "gate"),
    [
        (r"ab(cd|ef)g", ("ab",)),
        (r"x(?:hello|world)+y", ("hello", "world")),
        (r"(ab|)cdef", ("cdef",)),
        (r"(?:foo)?bar", ("bar",)),
        (r"(?i)unsubscribe", None),  # case-folding: no literal is safe
        (r"[a-z]+\d", None),
        (r"(abc|d)", None),  # one alternative too short to be worth it
        (r"(away|away from )", ("away",)),  # a literal holding a shorter one is dropped
    ],
)
def test_required_literals(pattern: str, gate: tuple[str, ...] | None) -> None:
    assert required_literals(re.compile(pattern)) == gate


def test_helpdesk_agent_reuses_the_rows_decide_tested() -> None:
    env = {"from": {"email": "anna@acme.example"}, "headers": {"X-Zendesk-From-Account-Id": "1"}}
    facts = facts_of(env)
    intent, reasons = decide(facts)
    assert facts.results["helpdesk-zendesk"] is not None
    assert facts.results["helpdesk-agent"] == "Zendesk headers from a person (an agent's reply)"
    assert intent == "human"
    assert decide(facts_of(env)) == (intent, reasons)


def test_own_is_built_once_per_config_values_and_follows_changes() -> None:
    from mailgate.config import Config, DomainConfig

    cfg = Config()
    first = own_of(cfg.domains, cfg.reply)
    assert own_of(cfg.domains, cfg.reply) is first  # cached: no re-parse per message
    cfg.domains.append(DomainConfig(name="*.help.example"))
    changed = own_of(cfg.domains, cfg.reply)
    assert changed is not first and changed.domain("a@x.help.example")
    assert not first.domain("a@x.help.example")
