"""The intent signal table, one case per row (and the human side where a row could misfire)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from mailgate.config import DomainConfig, ReplyConfig
from mailgate.pipeline.intent_signals import (
    BY_ID,
    SIGNALS,
    Facts,
    Own,
    markdown_table,
    own_of,
)
from mailgate.pipeline.stages.intent import classify_intent, decide, facts_of
from tests.support.pipeline import make_env


def own() -> Own:
    """Built per call (not at import), so mutation testing sees own_of run."""
    return own_of(
        [DomainConfig(name="example.test"), DomainConfig(name="*.support.example.test")],
        ReplyConfig(
            from_="Help <help@example.test>", tenant_from={"acme": "acme@acme.example.org"}
        ),
    )


PERSON = "dana@customer.test"


def facts(ours: Own | None = None, **kw: Any) -> Facts:
    return dataclasses.replace(facts_of(make_env(**kw)), own=ours or own())


def intent_of(ours: Own | None = None, **kw: Any) -> tuple[str, list[str]]:
    return decide(facts(ours, **kw))


NDR_TEXT = (
    "This is the mail system at host mx.remote.test.\n\nI'm sorry to have to inform you that "
    "your message could not be delivered to one or more recipients."
)
ACK_TEXT = "We have received your request and will get back to you shortly."

# (case id, expected intent, the signal that must decide it, make_env keywords)
CASES: list[tuple[str, str, str, dict[str, Any]]] = [
    ("loop ours", "own-notification", "mailgate-loop",
     {"headers": {"X-Mailgate-Loop": "acme.support.example.test"}}),
    ("loop of another mailgate", "ticket-system-ack", "mailgate-loop-foreign",
     {"headers": {"X-Mailgate-Loop": "vendor.test"}}),
    ("x-loop ours", "own-notification", "x-loop-ours",
     {"headers": {"X-Loop": "help@example.test"}}),
    ("From our reply address", "own-notification", "from-reply-address",
     {"sender": "help@example.test"}),
    ("From a tenant's reply address", "own-notification", "from-reply-address",
     {"sender": "acme@acme.example.org"}),
    ("From our per-ticket alias", "own-notification", "from-reply-address",
     {"sender": "help+T-1042@example.test"}),
    ("automated mail from our wildcard domain", "own-notification", "own-domain-automated",
     {"sender": "alerts@acme.support.example.test",
      "headers": {"Auto-Submitted": "auto-generated"}}),
    ("parsed bounce", "bounce", "dsn-parsed", {"bounce": {"recipients": []}}),
    ("delivery report", "bounce", "dsn-report",
     {"headers": {"Content-Type": 'multipart/report; report-type="delivery-status"; b=x'}}),
    ("Exchange NDR header", "bounce", "exchange-ndr",
     {"headers": {"X-MS-Exchange-Message-Is-Ndr": ""}}),
    ("Exim X-Failed-Recipients", "bounce", "exchange-ndr",
     {"headers": {"X-Failed-Recipients": "x@y.test"}}),
    ("MAILER-DAEMON with DSN body", "bounce", "daemon-sender",
     {"sender": "MAILER-DAEMON@mx.remote.test", "subject": "Notice", "text": NDR_TEXT}),
    ("postmaster with DSN subject", "bounce", "daemon-sender",
     {"sender": "postmaster@mx.remote.test", "subject": "Undeliverable: your order"}),
    ("null sender with DSN subject", "bounce", "dsn-subject",
     {"mail_from": "", "sender": "ops@remote.test", "subject": "Mail delivery failed"}),
    ("null sender with DSN body", "bounce", "dsn-body",
     {"mail_from": "", "sender": "ops@remote.test", "subject": "Hi", "text": NDR_TEXT}),
    ("calendar cancel", "calendar", "calendar-reply",
     {"calendar": {"method": "CANCEL"}}),
    ("Zendesk ack", "ticket-system-ack", "helpdesk-zendesk",
     {"sender": "support@vendor.test", "headers": {"X-Zendesk-From-Account-Id": "1"},
      "subject": "[Request received] Billing"}),
    ("Freshdesk via X-FC-MachineGenerated", "ticket-system-ack", "helpdesk-freshdesk",
     {"headers": {"X-FC-MachineGenerated": "true", "Auto-Submitted": "auto-replied"}}),
    ("Help Scout by Message-ID", "ticket-system-ack", "helpdesk-helpscout",
     {"message_id": "<reply-1@helpscout.net>", "text": ACK_TEXT}),
    ("Intercom", "ticket-system-ack", "helpdesk-intercom",
     {"headers": {"X-Intercom-Bot": "1"}, "text": ACK_TEXT}),
    ("Jira Service Management", "ticket-system-ack", "helpdesk-jira",
     {"headers": {"X-JIRA-FingerPrint": "abc"}, "subject": "[JIRA] Request SD-12 received"}),
    ("ServiceNow", "ticket-system-ack", "helpdesk-servicenow",
     {"headers": {"X-ServiceNow-Generated": "true"}, "text": ACK_TEXT}),
    ("Salesforce", "ticket-system-ack", "helpdesk-salesforce",
     {"headers": {"X-SFDC-LK": "00D"}, "subject": "Case 00001234 has been created"}),
    ("HubSpot", "ticket-system-ack", "helpdesk-hubspot",
     {"headers": {"X-HubSpot-Ticket": "9"}, "text": ACK_TEXT}),
    ("Zoho Desk by X-Mailer", "ticket-system-ack", "helpdesk-zohodesk",
     {"headers": {"X-Mailer": "Zoho Desk"}, "text": ACK_TEXT}),
    ("Kayako", "ticket-system-ack", "helpdesk-kayako",
     {"headers": {"X-Kayako-Ticket": "1"}, "text": ACK_TEXT}),
    ("Front", "ticket-system-ack", "helpdesk-front",
     {"message_id": "<a1@frontapp.com>", "text": ACK_TEXT}),
    ("Gorgias", "ticket-system-ack", "helpdesk-gorgias",
     {"headers": {"X-Gorgias-Ticket": "1"}, "text": ACK_TEXT}),
    ("OTRS", "ticket-system-ack", "helpdesk-otrs",
     {"headers": {"X-OTRS-Loop": "yes"}, "subject": "Ticket 2026042310000011 created"}),
    ("osTicket auto-response", "ticket-system-ack", "helpdesk-osticket",
     {"headers": {"X-Mailer": "osTicket Mailer", "X-Autoreply": "yes"}}),
    ("Request Tracker", "ticket-system-ack", "helpdesk-rt",
     {"headers": {"RT-Ticket": "example.test #7"}, "text": ACK_TEXT}),
    ("Spiceworks", "ticket-system-ack", "helpdesk-spiceworks",
     {"headers": {"User-Agent": "Spiceworks"}, "text": ACK_TEXT}),
    ("Zammad", "ticket-system-ack", "helpdesk-zammad",
     {"headers": {"X-Zammad-Ticket-ID": "3"}, "text": ACK_TEXT}),
    ("HappyFox", "ticket-system-ack", "helpdesk-others",
     {"headers": {"X-HappyFox-Ticket": "3"}, "text": ACK_TEXT}),
    ("ack subject with automation", "ticket-system-ack", "ack-subject",
     {"subject": "Ticket #12345 has been created", "headers": {"Auto-Submitted": "auto-generated"}}),
    ("ack body with automation", "ticket-system-ack", "ack-body",
     {"text": "Nous avons bien reçu votre message.", "headers": {"Precedence": "bulk"}}),
    ("Outlook automatic reply", "out-of-office", "ooo-subject",
     {"subject": "Automatic reply: Order 55"}),
    ("German Abwesenheitsnotiz", "out-of-office", "ooo-subject",
     {"subject": "Abwesenheitsnotiz: Rechnung"}),
    ("Sieve Auto: with Auto-Submitted", "out-of-office", "ooo-auto-prefix",
     {"subject": "Auto: Order 55", "headers": {"Auto-Submitted": "auto-replied"}}),
    ("vacation wording with auto-replied", "out-of-office", "ooo-wording",
     {"subject": "Re: order", "text": "I am currently out of the office",
      "headers": {"Auto-Submitted": "auto-replied"}}),
    ("Outlook rule template with vacation wording", "out-of-office", "ooo-wording",
     {"subject": "Re: order", "text": "Ich bin im Urlaub.",
      "headers": {"X-MS-Exchange-Inbox-Rules-Loop": "dana@customer.test"}}),
    ("RFC 3834 auto-replied", "auto-reply", "auto-replied",
     {"headers": {"Auto-Submitted": "auto-replied; owner=x"}}),
    ("cPanel X-Autorespond", "auto-reply", "responder-header",
     {"headers": {"X-Autorespond": "Will not send another for 86400 seconds"}}),
    ("Hotmail X-Autogenerated: Reply", "auto-reply", "responder-header",
     {"headers": {"X-Autogenerated": "Reply"}}),
    ("Precedence: auto_reply", "auto-reply", "precedence-auto-reply",
     {"headers": {"Precedence": "auto_reply"}}),
    ("Outlook reply-with-template rule", "auto-reply", "rules-loop",
     {"subject": "Re: order", "headers": {"X-MS-Exchange-Inbox-Rules-Loop": PERSON}}),
    ("read receipt", "auto-reply", "read-receipt",
     {"headers": {"Content-Type": "multipart/report; report-type=disposition-notification"}}),
    ("null sender", "auto-reply", "null-sender", {"mail_from": "<>"}),
    ("List-Id", "list", "list-header", {"headers": {"List-Id": "<x.lists.test>"}}),
    ("List-Unsubscribe-Post", "list", "list-header",
     {"headers": {"List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}}),
    ("Precedence: bulk", "list", "precedence-bulk", {"headers": {"Precedence": "bulk"}}),
    ("SES with a noreply sender", "list", "esp-header",
     {"sender": "noreply@shop.test", "headers": {"X-SES-Outgoing": "2026.04.23-54.240.1.1"}}),
    ("SendGrid with unsubscribe wording", "list", "esp-header",
     {"headers": {"X-SG-EID": "abc"}, "text": "Spring sale! Unsubscribe here."}),
    ("Feedback-ID with unsubscribe wording", "list", "feedback-id",
     {"headers": {"Feedback-ID": "c1:c2:mailchimp"}, "text": "Click to unsubscribe"}),
    ("CSA with Mailchimp", "list", "esp-header",
     {"headers": {"X-CSA-Complaints": "csa-complaints@eco.de", "X-MC-User": "u1"}}),
    ("CSA with a newsletter sender", "list", "csa",
     {"sender": "newsletter@brand.test", "headers": {"X-CSA-Complaints": "csa@eco.de"}}),
    ("bulk wording from a robot", "list", "bulk-wording",
     {"sender": "news@brand.test", "text": "View this email in your browser"}),
    ("Auto-Submitted: auto-generated", "auto-reply", "auto-generated",
     {"headers": {"Auto-Submitted": "auto-generated"}}),
    ("Auto-Submitted: auto-notified", "auto-reply", "auto-generated",
     {"headers": {"Auto-Submitted": "auto-notified"}}),
    ("X-Auto-Response-Suppress: All", "auto-reply", "suppress",
     {"headers": {"X-Auto-Response-Suppress": "All"}}),
    ("cron output", "auto-reply", "cron", {"headers": {"X-Cron-Env": "<SHELL=/bin/sh>"}}),
]  # fmt: skip

# a human message that merely carries an automation-related header, or its wording
HUMAN: list[tuple[str, dict[str, Any]]] = [
    ("nothing at all", {}),
    ("Auto-Submitted: no", {"headers": {"Auto-Submitted": "no"}}),
    ("X-Auto-Response-Suppress asking only for no receipts",
     {"headers": {"X-Auto-Response-Suppress": "DR, RN, NRN"}}),
    ("asks for a read receipt", {"headers": {"Disposition-Notification-To": PERSON}}),
    ("Precedence added by a forwarder",
     {"headers": {"Precedence": "bulk", "X-Forwarded-For": "dana@uni.test ops@x.test"}}),
    ("Precedence on a resent message", {"headers": {"Precedence": "junk", "Resent-From": PERSON}}),
    ("Outlook rule that only forwarded",
     {"headers": {"X-MS-Exchange-Inbox-Rules-Loop": PERSON,
                  "X-MS-Exchange-Organization-AutoForwarded": "true"}}),
    ("an inline forward through a rule",
     {"headers": {"X-MS-Exchange-Inbox-Rules-Loop": PERSON},
      "forwarded": [{"inline": True, "from": None}]}),
    ("Zendesk agent reply",
     {"sender": "sam@vendor.test", "subject": "Re: Billing",
      "text": "##- Please type your reply above this line -##\n\nSam: refund done.",
      "headers": {"X-Zendesk-From-Account-Id": "1", "Auto-Submitted": "auto-generated",
                  "X-Auto-Response-Suppress": "All", "Precedence": "bulk"}}),
    ("Freshdesk agent reply", {"headers": {"X-Freshdesk-Ticket": "55"}, "text": "Done."}),
    ("mentions vacation", {"subject": "Booking my vacation", "text": "I'm on vacation next week"}),
    ("says Auto: about a car", {"subject": "Auto: Motorschaden", "text": "Mein Auto ist kaputt"}),
    ("writes we have received", {"subject": "We have received your invoice, thanks"}),
    ("asks to unsubscribe", {"text": "Please unsubscribe me from everything."}),
    ("noreply robot without bulk evidence", {"sender": "noreply@shop.test"}),
    ("sends through SES", {"headers": {"X-SES-Outgoing": "2026.04.23"}}),
    ("MAILER-DAEMON without DSN wording", {"sender": "mailer-daemon@x.test", "subject": "Hi"}),
    ("DSN wording from a person", {"subject": "Undeliverable parcel", "text": "where is it?"}),
    ("our domain without automation", {"sender": "agent@example.test"}),
    ("loop header of nobody", {"headers": {"X-Loop": "someone@elsewhere.test"}}),
    ("a calendar invitation", {"calendar": {"method": "REQUEST"}}),
    ("a published calendar", {"calendar": {"method": "PUBLISH"}}),
]  # fmt: skip


@pytest.mark.parametrize(("case", "intent", "signal", "kw"), CASES, ids=[c[0] for c in CASES])
def test_signal_decides(case: str, intent: str, signal: str, kw: dict[str, Any]) -> None:
    got, reasons = intent_of(**kw)
    assert (got, reasons[0].split(":")[0]) == (intent, signal), reasons
    assert BY_ID[signal].intent == intent


@pytest.mark.parametrize(("case", "kw"), HUMAN, ids=[c[0] for c in HUMAN])
def test_human_stays_human(case: str, kw: dict[str, Any]) -> None:
    got, reasons = intent_of(**kw)
    assert got == "human", reasons


def test_every_signal_has_a_case() -> None:
    decided = {c[2] for c in CASES}
    supporting = {s.id for s in SIGNALS} - decided
    # robot-sender only corroborates (every group it needs sits earlier in the table)
    assert supporting == {"forwarder", "helpdesk-agent", "robot-sender"}
    seen = {r.split(":")[0] for _, _, _, kw in CASES for r in intent_of(**kw)[1]}
    seen |= {r.split(":")[0] for _, kw in HUMAN for r in intent_of(**kw)[1]}
    assert supporting <= seen


def test_human_reasons_name_the_counter_signal() -> None:
    assert intent_of(**HUMAN[0][1]) == ("human", ["no automation signal"])
    assert intent_of(headers={"Precedence": "bulk", "Resent-From": PERSON}) == (
        "human",
        ["forwarder: resent-from: " + PERSON],
    )
    agent = intent_of(headers={"X-Zendesk-Ticket": "1", "Auto-Submitted": "auto-generated"})
    assert agent == ("human", ["helpdesk-agent: Zendesk headers from a person (an agent's reply)"])


def test_corroborated_reasons_name_both_signals() -> None:
    assert intent_of(sender="noreply@shop.test", headers={"X-Mailgun-Sid": "x"}) == (
        "list",
        ["esp-header: header x-mailgun-sid", "robot-sender: sender noreply@…"],
    )
    got, reasons = intent_of(
        subject="Abwesend", text="x", headers={"Auto-Submitted": "auto-replied"}
    )
    assert got == "out-of-office" and reasons[1] == "auto-replied: auto-submitted: auto-replied"


def test_precedence_between_rows() -> None:
    """Table order: own > bounce > calendar > ack > out-of-office > auto-reply > list > generic."""
    both = {"Auto-Submitted": "auto-replied", "Precedence": "bulk", "List-Id": "<l>"}
    assert intent_of(headers=both)[0] == "auto-reply"
    assert intent_of(headers=both, subject="Out of office: back Monday")[0] == "out-of-office"
    assert intent_of(headers=both, bounce={"recipients": []})[0] == "bounce"
    assert intent_of(headers={**both, "X-Mailgate-Loop": "example.test"})[0] == "own-notification"
    assert intent_of(headers={"List-Id": "<l>", "Auto-Submitted": "auto-generated"})[0] == "list"
    cancel = intent_of(headers=both, calendar={"method": "cancel"})
    assert cancel[0] == "calendar"
    # a helpdesk agent's reply from a noreply address is no agent: the automation counts
    robot = {"X-Zendesk-Ticket": "1", "Auto-Submitted": "auto-generated"}
    assert intent_of(sender="noreply@vendor.test", headers=robot)[0] == "auto-reply"
    assert intent_of(mail_from="", headers={"X-Zendesk-Ticket": "1"})[0] == "auto-reply"


def test_own_without_a_config() -> None:
    """No config (``classify_intent(env)``): any loop header is ours, no domain is."""
    env = make_env(headers={"X-Mailgate-Loop": "anything.test"})
    assert classify_intent(env)[0] == "own-notification"
    assert classify_intent(make_env(sender="help@example.test"))[0] == "human"
    assert not Own().domain("x@example.test") and not Own().address("help@example.test")


def test_own_addresses_and_domains() -> None:
    OWN = own()
    assert OWN.domain("a@EXAMPLE.test.") and OWN.domain("<x@acme.support.example.test>")
    assert OWN.domain("acme.example.org") and not OWN.domain("support.example.test.evil")
    assert not OWN.domain("") and not OWN.domain("x@notexample.test")
    assert OWN.address("HELP@example.test") and OWN.address("help+t-1@example.test")
    assert not OWN.address("helper@example.test") and not OWN.address("help@acme.example.org")
    assert OWN.known and own_of([], ReplyConfig(from_="", tenant_from={})).addresses == frozenset()


def test_null_sender_is_only_the_empty_path() -> None:
    assert facts(mail_from="<>").null_sender and facts(mail_from=" ").null_sender
    env = make_env()
    env["envelope"]["mailFrom"] = None
    assert not facts_of(env).null_sender
    assert not facts(mail_from="a@b.test").null_sender


def test_wording_is_read_within_limits() -> None:
    late = "x" * 3000 + " out of the office"
    assert intent_of(text=late, headers={"Auto-Submitted": "auto-replied"})[0] == "auto-reply"
    early = "x" * 900 + " out of the office"
    assert intent_of(text=early, headers={"Auto-Submitted": "auto-replied"})[0] == "out-of-office"
    assert facts(subject="S" * 2000).subject == "s" * 1000


def test_docs_table_is_the_signal_table() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "intent.md").read_text("utf-8")
    assert markdown_table() in doc
    for s in SIGNALS:
        assert s.source and s.meaning and s.system


@pytest.mark.parametrize(
    "header",
    [
        "Resent-From",
        "Resent-Sender",
        "X-Forwarded-For",
        "X-Forwarded-To",
        "X-MS-Exchange-Organization-AutoForwarded",
        "X-Google-Original-From",
    ],
)
def test_each_forwarder_header_vetoes_precedence(header: str) -> None:
    got = intent_of(headers={"Precedence": "bulk", header: "dana@uni.test"})
    assert got == ("human", [f"forwarder: {header.lower()}: dana@uni.test"])


def test_inline_forward_only_counts_when_inline() -> None:
    rule = {"X-MS-Exchange-Inbox-Rules-Loop": PERSON}
    attached = intent_of(headers=rule, forwarded=[{"from": None}])
    assert attached[0] == "auto-reply"
    assert intent_of(headers=rule, forwarded="junk")[0] == "auto-reply"
    inline = intent_of(headers=rule, forwarded=[None, {"inline": True}])
    assert inline == ("human", ["forwarder: inline forward in the body"])


@pytest.mark.parametrize(
    ("method", "intent"),
    [
        ("REPLY", "calendar"),
        ("cancel", "calendar"),
        ("COUNTER", "calendar"),
        ("DECLINECOUNTER", "calendar"),
        ("REQUEST", "human"),
        ("ADD", "human"),
        ("", "human"),
        (None, "human"),
    ],
)
def test_calendar_methods(method: str | None, intent: str) -> None:
    got = intent_of(calendar={"method": method, "uid": "u"})
    assert got[0] == intent
    if intent == "calendar":
        assert got[1] == [f"calendar-reply: METHOD:{method.upper()}"]  # type: ignore[union-attr]
    assert intent_of(calendar="CANCEL")[0] == "human"


@pytest.mark.parametrize(
    ("ctype", "intent"),
    [
        ('multipart/report; report-type="delivery-status"; boundary=x', "bounce"),
        ("multipart/report;report-type=delivery-status", "bounce"),
        ("Multipart/Report; Report-Type=Delivery-Status", "bounce"),
        ("multipart/report; report-type=delivery-statusx", "human"),
        ("multipart/mixed; report-type=delivery-status", "human"),
        ("text/plain; x=multipart/report; report-type=delivery-status", "human"),
        ("multipart/report; report-type=disposition-notification", "auto-reply"),
    ],
)
def test_report_types(ctype: str, intent: str) -> None:
    assert intent_of(headers={"Content-Type": ctype})[0] == intent


# the exact reasons: what an operator reads in the trace
REASONS: list[tuple[dict[str, Any], list[str]]] = [
    ({"headers": {"Auto-Submitted": "Auto-Replied"}},
     ["auto-replied: auto-submitted: auto-replied"]),
    ({"headers": {"X-Autoreply": "yes"}}, ["responder-header: x-autoreply: yes"]),
    ({"headers": {"List-Id": "<" + "l" * 100 + ">"}}, ["list-header: list-id: <" + "l" * 59]),
    ({"headers": {"X-Zendesk-Ticket": "1"}, "subject": "Request 12 received"},
     ["helpdesk-zendesk: header x-zendesk-ticket", "ack-subject: subject 'request 12 received'"]),
    ({"headers": {"X-Mailer": "Zendesk Mailer"}, "text": ACK_TEXT},
     ["helpdesk-zendesk: x-mailer: zendesk mailer",
      "ack-body: body 'we have received your request'"]),
    ({"headers": {"User-Agent": "Kayako fusion"}, "text": ACK_TEXT},
     ["helpdesk-kayako: user-agent: kayako fusion",
      "ack-body: body 'we have received your request'"]),
    ({"message_id": "<A1@Zendesk.COM>", "headers": {"Auto-Submitted": "auto-replied"}},
     ["helpdesk-zendesk: Message-ID @zendesk.com",
      "auto-replied: auto-submitted: auto-replied"]),
    ({"sender": "MAILER-DAEMON@mx.test", "subject": "Undelivered Mail Returned to Sender"},
     ["daemon-sender: sender mailer-daemon@mx.test", "dsn-subject: subject 'undelivered'"]),
    ({"mail_from": "", "sender": "x@y.test", "subject": "s", "text": NDR_TEXT},
     ["dsn-body: body 'this is the mail system at host'", "null-sender: MAIL FROM:<>"]),
    ({"sender": "help@example.test"},
     ["from-reply-address: From is our reply address help@example.test"]),
    ({"sender": "bot@example.test", "headers": {"Precedence": "auto_reply"}},
     ["own-domain-automated: sender in our domain example.test",
      "precedence-auto-reply: precedence: auto_reply"]),
    ({"headers": {"X-Loop": "a@b.test, Help@Example.test"}},
     ["x-loop-ours: X-Loop: help@example.test"]),
    ({"headers": {"X-Mailgate-Loop": "other.test"}},
     ["mailgate-loop-foreign: X-Mailgate-Loop of another system: other.test"]),
    ({"headers": {"X-Mailgate-Loop": "example.test"}},
     ["mailgate-loop: X-Mailgate-Loop: example.test"]),
    ({"bounce": {"status": "5.1.1"}},
     ["dsn-parsed: parsed delivery status (RFC 3464 or a mailer-daemon's text)"]),
    ({"sender": "noreply@shop.test", "text": "Manage your email preferences"},
     ["bulk-wording: body 'manage your email preferences'", "robot-sender: sender noreply@…"]),
]  # fmt: skip


@pytest.mark.parametrize(("kw", "reasons"), REASONS)
def test_reasons(kw: dict[str, Any], reasons: list[str]) -> None:
    assert intent_of(**kw)[1] == reasons


def test_robot_sender_forms() -> None:
    ses = {"X-SES-Outgoing": "x"}
    for local in ("no-reply", "no_reply", "donotreply", "do-not-reply", "newsletter", "news",
                  "marketing", "mailer", "notification", "notifications", "notify", "bounces",
                  "noreply+abc"):  # fmt: skip
        assert intent_of(sender=f"{local}@shop.test", headers=ses)[0] == "list", local
    for local in ("newsroom", "anne.news", "reply", "info"):
        assert intent_of(sender=f"{local}@shop.test", headers=ses)[0] == "human", local
    assert intent_of(sender="", mail_from="", headers=ses)[0] == "auto-reply"


async def test_stage_reads_our_domains_from_the_config() -> None:
    from mailgate.pipeline.offline import MemoryPorts
    from mailgate.pipeline.runner import PipelineRunner
    from tests.support.pipeline import make_config

    cfg = make_config()
    runner = PipelineRunner(cfg, MemoryPorts())
    alias = make_env(sender=cfg.reply.from_.replace("@", "+T-9@"))
    await runner.process(alias)
    assert alias["intent"] == "own-notification"
    other = make_env(headers={"X-Mailgate-Loop": "elsewhere.test"})
    await runner.process(other)
    assert other["intent"] == "ticket-system-ack"
    plain = make_env()
    await runner.process(plain)
    assert plain["intent"] == "human"
