"""Rules: every matcher kind, the combinators, the actions and their semantics."""

from __future__ import annotations

from typing import Any

import pytest

from mailgate.config import ConfigError
from mailgate.pipeline.rules import Facts, RuleSet, decide, load_rules
from tests.support.pipeline import make_config, make_env


def ruleset(*rules: dict[str, Any]) -> RuleSet:
    return load_rules(make_config(list(rules)))


def matches(cond: dict[str, Any], env: dict[str, Any] | None = None, **kw: Any) -> bool:
    rs = ruleset({"name": "r", "if": cond, "then": {"queue": "q"}})
    hit = rs.evaluate(Facts(env or make_env(**kw)))[0]
    return hit.matched


@pytest.mark.parametrize(
    ("cond", "expected"),
    [
        ({"subject": "/invoice|refund/i"}, True),
        ({"subject": "/^invoice/"}, False),
        ({"subject": "INVOICE"}, True),  # plain strings: case-insensitive substring
        ({"subject": "credit note"}, False),
        ({"subject": ["nope", "/#\\d+/"]}, True),  # a list: any value
        ({"text": "/refund\\s+please/i"}, True),
        ({"replyText": "refund"}, True),
        ({"html": True}, False),  # presence test; html is null
    ],
)
def test_text_matchers(cond: dict[str, Any], expected: bool) -> None:
    assert (
        matches(cond, subject="Invoice #4721 question", text="Please REFUND   please.") is expected
    )


def test_address_matchers() -> None:
    kw: dict[str, Any] = {
        "sender": "Bob@Shop.Customer.test",
        "to": ["billing@example.test"],
        "cc": ["support+T-7@example.test"],
    }
    assert matches({"from": "bob@shop.customer.test"}, **kw)
    assert matches({"from": "@customer.test"}, **kw)  # domain or subdomain
    assert matches({"from": "customer.test"}, **kw)
    assert not matches({"from": "@stomer.test"}, **kw)
    assert matches({"to": "billing@"}, **kw)  # local part
    assert matches({"cc": "support@"}, **kw)  # +tag ignored for a local-part match
    assert matches({"to": "/^billing@/"}, **kw)
    assert not matches({"to": "support@"}, **kw)
    assert matches({"recipient": "billing@example.test"}, **kw)
    assert matches({"mailFrom": "@shop.customer.test"}, **kw)
    assert matches({"from.domain": "shop.customer.test"}, **kw)
    assert matches({"from.name": "ali"}, **kw)


def test_header_and_keyword_matchers() -> None:
    env = make_env(headers={"X-Priority": "1 (Highest)", "X-Mailer": "Outlook 16"})
    assert matches({"header.x-priority": "/^1/"}, env)
    assert matches({"header.X-Mailer": "outlook"}, env)
    assert matches({"header.X-Missing": False}, env)
    assert not matches({"header.X-Missing": True}, env)
    assert matches({"tenant": "default"}, env)
    assert matches({"tenant": "def*"}, env)
    assert not matches({"tenant": "acme"}, env)


def test_attachment_matchers() -> None:
    att = {
        "filename": "Invoice-2024.PDF",
        "contentType": "application/pdf",
        "detectedType": "application/zip",
        "size": 3 * 1024 * 1024,
    }
    env = make_env(attachments=[att])
    assert matches({"attachment.filename": "/\\.pdf$/i"}, env)
    assert matches({"attachment.extension": "pdf"}, env)
    assert matches({"attachment.type": "application/pdf"}, env)
    assert matches({"attachment.sniffed": "application/zip"}, env)  # what the bytes are
    assert not matches({"attachment.sniffed": "application/pdf"}, env)
    assert matches({"attachment.size": "> 2MB"}, env)
    assert not matches({"attachment.size": "> 5MB"}, env)
    assert matches({"attachments": 1}, env)
    assert matches({"attachments": ">= 1"}, env)
    assert not matches({"attachments": "> 0"}, make_env())


def test_auth_spam_and_pipeline_field_matchers() -> None:
    env = make_env()
    env["dkim"] = {"passed": False, "result": "fail", "domain": "customer.test"}
    env["dmarc"] = {
        "passed": False,
        "result": "fail",
        "policy": "reject",
        "domain": "customer.test",
    }
    env["spam"] = {"score": 7.5, "flagged": True}
    env["intent"] = "out-of-office"
    env["thread"] = {"id": "thr_1", "ticket": "T-9", "isReply": True, "matchedBy": "alias"}
    assert matches({"dkim.passed": False}, env)
    assert not matches({"dkim.passed": True}, env)
    assert matches({"dmarc.result": "fail"}, env)
    assert matches({"dmarc.policy": "reject"}, env)
    assert matches({"spf.passed": True}, env)
    assert matches({"spam.score": "> 5"}, env)
    assert not matches({"spam.score": "<= 5"}, env)
    assert matches({"spam.flagged": True}, env)
    assert matches({"intent": "out-of-office"}, env)
    assert matches({"intent": ["bounce", "out-of-office"]}, env)
    assert matches({"thread.isReply": True}, env)
    assert matches({"thread.matchedBy": "alias"}, env)
    assert matches({"thread.ticket": "T-9"}, env)


def test_entity_matchers_see_extracted_entities() -> None:
    env = make_env(subject="Where is order #123456?", text="PO-55555 attached")
    rs = ruleset(
        {"name": "orders", "if": {"entity": "orderId"}, "then": {"queue": "orders"}},
        {"name": "po", "if": {"entities.poNumber": "/^PO-5/"}, "then": {"tags": ["po"]}},
    )
    from mailgate.pipeline.entities import build_entities, extract

    patterns = build_entities(make_config().pipeline)
    hits = rs.evaluate(Facts(env, entities=lambda: extract(env, patterns)))
    assert [h.matched for h in hits] == [True, True]


def test_combinators() -> None:
    kw: dict[str, Any] = {"subject": "Refund for order", "sender": "vip@bigco.test"}
    assert matches({"any": [{"subject": "nope"}, {"subject": "refund"}]}, **kw)
    assert not matches({"all": [{"subject": "refund"}, {"subject": "nope"}]}, **kw)
    assert matches({"all": [{"subject": "refund"}, {"from": "@bigco.test"}]}, **kw)
    assert matches({"subject": "refund", "from": "@bigco.test"}, **kw)  # keys in a table: AND
    assert not matches({"subject": "refund", "from": "@other.test"}, **kw)
    assert matches({"not": {"subject": "spam"}}, **kw)
    assert not matches({"not": [{"subject": "spam"}, {"subject": "refund"}]}, **kw)
    nested = {
        "all": [
            {"any": [{"subject": "invoice"}, {"subject": "refund"}]},
            {"not": {"from": "@competitor.test"}},
        ]
    }
    assert matches(nested, **kw)


def test_reasons_explain_each_hit() -> None:
    rs = ruleset(
        {
            "name": "billing",
            "if": {"any": [{"subject": "/invoice|refund|billing/i"}, {"to": "/billing@/"}]},
            "then": {"queue": "billing"},
        }
    )
    hit = rs.evaluate(Facts(make_env(subject="Refund please")))[0]
    assert hit.reasons == ["subject ~ /invoice|refund|billing/i ('Refund')"]
    body = ruleset({"name": "b", "if": {"text": "secret"}, "then": {"tags": ["x"]}})
    hit = body.evaluate(Facts(make_env(text="the secret is 1234")))[0]
    assert hit.reasons == ["text contains 'secret'"]  # bodies are never quoted


def test_semantics_accumulate_first_queue_highest_priority_stop() -> None:
    rs = ruleset(
        {
            "name": "vip",
            "if": {"from": "@bigco.test"},
            "then": {"tags": ["vip"], "priority": "high"},
        },
        {
            "name": "billing",
            "if": {"subject": "invoice"},
            "then": {"queue": "billing", "tags": ["billing"], "priority": "normal"},
            "confidence": 0.9,
        },
        {
            "name": "security",
            "if": {"subject": "password"},
            "then": {"queue": "security", "priority": "urgent", "stop": True},
        },
        {"name": "late", "if": {"subject": "invoice"}, "then": {"queue": "late", "tags": ["late"]}},
    )
    env = make_env(subject="Invoice for password reset", sender="ceo@bigco.test")
    hits = rs.evaluate(Facts(env))
    d = decide(hits, "triage")
    assert d.queue == "billing"  # the first rule that sets a queue wins
    assert d.rule == "billing" and d.confidence == 0.9
    assert d.tags == ["vip", "billing"]  # union in order
    assert d.priority == "urgent"  # highest
    assert hits[3].skipped == "after stop in rule 'security'"
    assert any("queue 'security' ignored" in r for r in d.reasons)
    env2 = make_env(subject="Hello", sender="x@bigco.test")
    d2 = decide(rs.evaluate(Facts(env2)), "triage")
    assert (d2.queue, d2.rule, d2.tags) == ("triage", "vip", ["vip"])
    assert "no matching rule set a queue" in d2.reasons[-1]


def test_tenant_scoped_rules_and_catch_all() -> None:
    rs = ruleset(
        {"name": "acme-default", "tenant": "acme", "then": {"queue": "acme-inbox"}},
        {"name": "everyone", "then": {"tags": ["seen"]}},
    )
    d = decide(rs.evaluate(Facts(make_env(tenant="acme"))), "triage")
    assert d.queue == "acme-inbox" and d.tags == ["seen"]
    hits = rs.evaluate(Facts(make_env(tenant="default")))
    assert hits[0].skipped == "tenant 'default' not in rule"
    assert decide(hits, "triage").queue == "triage"


def test_disabled_rule_is_validated_but_not_run() -> None:
    rs = ruleset(
        {"name": "off", "enabled": False, "then": {"queue": "never"}},
        {"name": "on", "then": {"tags": ["a"]}},
    )
    assert [r.name for r in rs.rules] == ["on"]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            {"name": "x", "if": {"subjct": "a"}, "then": {"queue": "q"}},
            "unknown key 'rules[0].if.subjct'",
        ),
        (
            {"name": "x", "if": {"subject": "/inv(/i"}, "then": {"queue": "q"}},
            "rules[0].if.subject = '/inv(/i': expected a valid regex",
        ),
        (
            {"name": "x", "if": {"subject": "/a/z"}, "then": {"queue": "q"}},
            "unknown regex flag 'z'",
        ),
        (
            {"name": "x", "if": {"any": []}, "then": {"queue": "q"}},
            "rules[0].if.any = []: expected a non-empty list",
        ),
        (
            {"name": "x", "if": {"dkim.passed": "yes"}, "then": {"queue": "q"}},
            "expected true or false",
        ),
        ({"name": "x", "if": {"spam.score": "lots"}, "then": {"queue": "q"}}, "comparison like"),
        (
            {"name": "x", "then": {"priority": "hgh"}},
            "rules[0].then.priority = 'hgh': expected one of low, normal, high, urgent",
        ),
        (
            {"name": "x", "then": {"queue": "q", "colour": "red"}},
            "unknown key 'rules[0].then.colour'",
        ),
        (
            {"name": "x", "then": {"webhooks": ["nope"]}},
            "rules[0].then.webhooks[0] = 'nope': expected a configured webhook target",
        ),
        ({"name": "x", "then": {"reply": True}}, "template name, or false"),
        ({"name": "x", "then": {}}, "at least one action"),
        ({"name": "x"}, "rules[0].then"),
        ({"if": {"subject": "a"}, "then": {"queue": "q"}}, "rules[0].name"),
        ({"name": "x", "confidence": 2, "then": {"queue": "q"}}, "from 0 to 1"),
        ({"name": "x", "then": {"tags": "a"}, "wat": 1}, "unknown key 'rules[0].wat'"),
    ],
)
def test_rule_errors_name_the_key(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        ruleset(rule)
    assert message in str(err.value)


def test_duplicate_names_refused() -> None:
    with pytest.raises(ConfigError, match=r"rules\[1\]\.name = 'a': expected a unique rule name"):
        ruleset({"name": "a", "then": {"queue": "q"}}, {"name": "a", "then": {"queue": "r"}})
