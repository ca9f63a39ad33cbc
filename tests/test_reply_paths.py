"""Where acknowledgements may go: plain return paths only, bounded backscatter, the tenant's own
From, SMTPUTF8 only through a smarthost that offers it, and an envelope ``reply`` that tells
the truth.

End-to-end cases run a real ``mailgate serve`` (SMTP listener, worker, SMTP outbox) against the
SMTP sink as smarthost; the rest use the reply harness (real store and pipeline) with the real
``ReplySender``. `return_path_problem` is also checked case by case: it is the guard mutation
testing measures (see docs/replies.md).
"""

from __future__ import annotations

import email
import email.policy
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mailgate.delivery.smtp_out import ReplySender
from mailgate.reply.return_path import PROBLEMS, describe, return_path_problem
from tests.support.reply_harness import ReplyHarness, message
from tests.support.reply_serve import outbox, reply_toml
from tests.support.server import MailgateServer, wait_for
from tests.support.smtp_sink import SmtpSink, smtp_sink

__all__ = ["smtp_sink"]


# --------------------------------------------------------------------------- the guard itself

LONG_LABEL = "a" * 63


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("alice@example.org", None),
        ("Alice.Smith+tag@mail.example.org", None),
        ("o'brien@example.org", None),
        ("bounce=SRS0=ab=cd@example.org", None),
        ("a_b-c@sub-domain.example.org", None),
        ("x@123.example.org", None),  # numeric labels are fine, only not the top one
        ("josé@exämple.org", None),  # SMTPUTF8: allowed here, checked against the smarthost
        ("a@xn--exmple-cua.org", None),
        ("a@bü-cher.example.org", None),  # a hyphen inside a U-label
        ("a@a.123.org", None),  # only the top-level label must not be numeric
        ("a@x.y.123", "ip-address"),
        ("a@" + "ä" * 60 + ".org", "bad-domain"),  # no valid A-label (too long)
        ("a" * 64 + "@example.org", None),
        (f"a@{LONG_LABEL}.example.org", None),
        ("user%victim.example@relay.example.org", "percent-hack"),
        ("relay!user@example.org", "bang-path"),
        ("@a.example,@b.example:user@c.example", "source-route"),
        ("@a.example:user@c.example", "source-route"),
        ("user@c.example,other@d.example", "source-route"),
        ("v@[10.0.0.1]", "ip-literal"),
        ("v@[IPv6:::1]", "source-route"),  # the colon is what betrays it first
        ("v@10.0.0.1", "ip-address"),
        ('"a%b"@example.org', "quoted-local-part"),
        ("a\\@b@example.org", "quoted-local-part"),
        ("a b@example.org", "control-characters"),
        ("a\tb@example.org", "control-characters"),
        ("a\r\nRCPT TO:<x@y.org>@example.org", "control-characters"),
        ('"a b"@example.org', "quoted-local-part"),
        ("a\u00a0b@example.org", "control-characters"),
        ("alice", "no-domain"),
        ("a@b@example.org", "multiple-at"),
        ("a" * 65 + "@example.org", "bad-local-part"),
        ("a|b@example.org", "bad-local-part"),
        ("a/b@example.org", "bad-local-part"),
        ("a☃@example.org", "bad-local-part"),
        (".a@example.org", "bad-local-part"),
        ("a.@example.org", "bad-local-part"),
        ("a..b@example.org", "bad-local-part"),
        ("@example.org", "source-route"),
        ("a@localhost", "bad-domain"),
        ("a@example.org.", "bad-domain"),
        ("a@.example.org", "bad-domain"),
        ("a@exa..mple.org", "bad-domain"),
        ("a@-x.example.org", "bad-domain"),
        ("a@x-.example.org", "bad-domain"),
        ("a@ex_ample.org", "bad-domain"),
        ("a@ex☃.org", "bad-domain"),
        (f"a@{LONG_LABEL}a.example.org", "bad-domain"),
        ("a@", "bad-domain"),
        ("a@" + ".".join([LONG_LABEL] * 4), "too-long"),  # 255 octets of domain
        ("a" * 64 + "@" + ".".join(["b" * 62] * 3) + ".org", "too-long"),  # 257 octets
        ("a" * 64 + "@" + ".".join(["b" * 61] * 3) + ".abcd", "too-long"),  # 255 octets
        ("a" * 64 + "@" + ".".join(["b" * 61] * 3) + ".abc", None),  # 254 octets
    ],
)
def test_return_path_forms(path: str, problem: str | None) -> None:
    assert return_path_problem(path) == problem


def test_length_boundaries_are_exact() -> None:
    domain = ".".join([LONG_LABEL, LONG_LABEL, LONG_LABEL, "a" * 56, "org"])
    assert len("a@" + domain) == 254
    assert return_path_problem("a@" + domain) is None
    assert return_path_problem("ab@" + domain) == "too-long"
    assert return_path_problem("a@a" + domain) == "too-long"
    path_254 = "a" * (254 - len("@example.org")) + "@example.org"
    assert return_path_problem(path_254) == "bad-local-part"  # local over 64, not too long
    assert return_path_problem("a" + path_254) == "too-long"
    assert return_path_problem("é" * 32 + "@example.org") is None  # 64 octets
    assert return_path_problem("é" * 33 + "@example.org") == "bad-local-part"  # 66 octets
    assert return_path_problem("é" * 122 + "@example.org") == "too-long"  # 256 octets, 134 chars


def test_describe_names_the_problem() -> None:
    assert describe("percent-hack") == "percent-hack: return path is a %-hack (user%host@relay)"
    assert describe("odd") == "odd: return path is odd"
    assert set(PROBLEMS) >= {"percent-hack", "bang-path", "source-route", "ip-literal"}


# --------------------------------------------------------------------------- through serve


def test_unusual_return_paths_are_refused_with_reason_through_serve(
    mailgate_server: Callable[..., MailgateServer], smtp_sink: SmtpSink
) -> None:
    srv = mailgate_server(extra_toml=reply_toml(smtp_sink.address))
    forms = {
        "user%victim.example@relay.example.org": "percent-hack",
        "relay!user@example.org": "bang-path",
        "v@[10.0.0.1]": "ip-literal",
        '"a b"@example.org': "quoted-local-part",
        '"a%b"@example.org': "percent-hack",  # the listener unquotes it: a%b@example.org
        "v@10.0.0.1": "ip-address",
    }
    sent: dict[str, str] = {}
    with srv.smtp() as client:
        client.ehlo()
        for i, path in enumerate(forms):
            mid = f"<form{i}@mail.example.org>"
            code, _ = client.docmd(f"MAIL FROM:<{path}>")  # as written, not re-quoted
            assert code == 250, path
            assert client.rcpt("support@example.test")[0] == 250
            assert client.data(message(f"Question {i}", message_id=mid))[0] == 250
            sent[mid] = path
        # and a plain one, answered, in the same session
        client.mail("alice@example.org")
        client.rcpt("support@example.test")
        client.data(message("Plain question", message_id="<plain@mail.example.org>"))
    srv.wait_processed(len(forms) + 1)
    by_mid = {e["messageId"]: e for e in srv.envelopes()}
    for mid, path in sent.items():
        reply = by_mid[mid]["reply"]
        assert reply["queued"] is False and reply["reason"] == "invalid-return-path", path
        assert reply["detail"].startswith(forms[path] + ":"), (path, reply)
    [got] = smtp_sink.wait_for(1, timeout=30)
    assert got.rcpt_tos == ["alice@example.org"]
    assert by_mid["<plain@mail.example.org>"]["reply"]["queued"] is True
    wait_for(lambda: [r["state"] for r in outbox(srv)] == ["sent"], "one reply sent")


LABELS = [f"t{i:02d}" for i in range(1, 21)]
TWENTY_TENANTS = (
    '\n[[domains]]\nname = "*.help.example.test"\ncatch_all = true\n'
    f"tenants = {json.dumps(LABELS)}\n"
)


def test_backscatter_through_twenty_tenants_is_bounded_by_the_sender_limit(
    mailgate_server: Callable[..., MailgateServer], smtp_sink: SmtpSink
) -> None:
    srv = mailgate_server(
        extra_toml=reply_toml(smtp_sink.address, per_sender_limit=3) + TWENTY_TENANTS
    )
    victim = "victim@victim.example"
    with srv.smtp() as client:
        client.ehlo()
        for i, label in enumerate(LABELS):
            rcpt = f"help@{label}.help.example.test"
            assert client.mail(victim)[0] == 250
            assert client.rcpt(rcpt)[0] == 250
            raw = message(f"Forged {i}", to=rcpt, sender="Someone <someone@elsewhere.example>")
            assert client.data(raw)[0] == 250
    srv.wait_processed(len(LABELS))
    envs = srv.envelopes()
    assert sorted(e["tenant"] for e in envs) == LABELS  # twenty tenants…
    wait_for(
        lambda: all(r["state"] in ("sent", "suppressed") for r in outbox(srv)),
        "the outbox to settle",
    )
    rows = outbox(srv)
    sent = [r for r in rows if r["state"] == "sent"]
    assert len(sent) == 3  # …and still only per_sender_limit acknowledgements
    time.sleep(0.3)  # nothing else is pending, so nothing else can arrive
    assert len(smtp_sink.messages) == 3
    assert all(m.rcpt_tos == [victim] for m in smtp_sink.messages)
    queued = [e for e in envs if e["reply"]["queued"]]
    skipped = [e for e in envs if not e["reply"]["queued"]]
    assert len(queued) == 3 and len(skipped) == 17
    assert {e["reply"]["reason"] for e in skipped} == {"sender-limit"}
    assert all("all tenants" in e["reply"]["detail"] for e in skipped)
    # the envelope tells the truth: queued exactly for the rows that were sent
    assert {e["reply"]["outboxId"] for e in queued} == {r["id"] for r in sent}
    for r in rows:
        if r["state"] == "suppressed":
            assert r["reason"] == "sender-limit"


def test_ack_for_a_tenant_comes_from_the_tenant_and_the_answer_returns_there(
    mailgate_server: Callable[..., MailgateServer], smtp_sink: SmtpSink
) -> None:
    srv = mailgate_server(extra_toml=reply_toml(smtp_sink.address))
    # some volume in the default tenant first: acme's ticket numbers do not show it
    for i in range(3):
        srv.send(message(f"Default {i}"), mail_from=f"d{i}@example.org")
    smtp_sink.wait_for(3, timeout=30)
    acme = "help@acme.support.example.test"
    srv.send(
        message("Acme question", to=acme, message_id="<acme1@mail.example.org>"),
        mail_from="alice@example.org",
        rcpt_to=[acme],
    )
    got = smtp_sink.wait_for(4, timeout=30)[-1]
    ack = email.message_from_bytes(got.data, policy=email.policy.default)
    first = next(e for e in srv.envelopes() if e["messageId"] == "<acme1@mail.example.org>")
    ticket = first["thread"]["ticket"]
    assert first["tenant"] == "acme" and ticket == "T-1"
    assert ack["From"].addresses[0].addr_spec == acme
    alias = ack["Reply-To"].addresses[0].addr_spec
    assert alias == f"help+{ticket}@acme.support.example.test"
    assert ack["Message-ID"].endswith("@acme.support.example.test>")
    # the customer answers the alias (new subject, no In-Reply-To: only the alias can match)
    srv.send(
        message("One more thing", to=alias, sender="Alice Example <alice@example.org>"),
        mail_from="alice@example.org",
        rcpt_to=[alias],
    )
    srv.wait_processed(5)
    answer = next(e for e in srv.envelopes() if e["subject"] == "One more thing")
    assert answer["tenant"] == "acme"
    assert answer["thread"]["ticket"] == ticket
    assert answer["thread"]["id"] == first["thread"]["id"]
    assert answer["thread"]["matchedBy"] == "alias"


# --------------------------------------------------------------------------- harness + sender


async def test_smtputf8_return_path_needs_a_smarthost_that_offers_it(
    tmp_path: Path, smtp_sink: SmtpSink
) -> None:
    async with ReplyHarness(tmp_path, smarthost=smtp_sink.address) as h:
        smtp_sink.smtputf8 = False
        env = await h.deliver(message("Grüße"), mail_from="jürgen@exämple.org")
        assert env["reply"]["queued"] is True  # decided at send time, not before
        sender = ReplySender(h.store, h.cfg.reply)
        assert await sender.run_once() == 1
        [row] = await h.outbox()
        assert row.state == "suppressed" and row.reason == "smtputf8-unsupported", row
        assert "SMTPUTF8" in (row.last_error or "")
        assert smtp_sink.messages == []
        # the same reply through a smarthost that offers SMTPUTF8 leaves
        smtp_sink.smtputf8 = True
        env2 = await h.deliver(message("Noch eine Frage"), mail_from="jörg@exämple.org")
        assert await sender.run_once() == 1
        [got] = smtp_sink.wait_for(1)
        assert got.rcpt_tos == ["jörg@exämple.org"] and "SMTPUTF8" in got.mail_options
        rows = {r.msg_id: r for r in await h.outbox()}
        assert rows[env2["id"]].state == "sent"


async def test_envelope_says_suppressed_when_the_store_suppressed_the_reply(
    tmp_path: Path,
) -> None:
    """Two messages decided before either was stored: the store enforces the limit and the
    stored envelope of the loser says so (not ``queued: true``)."""
    async with ReplyHarness(tmp_path, per_sender_limit=1) as h:
        a = await h.spool(message("First"), mail_from="bob@example.org")
        b = await h.spool(message("Second"), mail_from="Bob@Example.org")
        out_a, out_b = await h.run(a), await h.run(b)
        assert a["reply"]["queued"] is True and b["reply"]["queued"] is True
        await h.complete(a, out_a)
        await h.complete(b, out_b)
        stored = await h.store.get_envelope(b["id"])
        rows = {r.msg_id: r for r in await h.outbox()}
    assert rows[a["id"]].state == "pending"
    assert rows[b["id"]].state == "suppressed" and rows[b["id"]].reason == "sender-limit"
    for reply in (stored["reply"], b["reply"]):
        assert reply["queued"] is False and reply["sent"] is False
        assert reply["reason"] == "sender-limit"
        assert reply["outboxId"] == rows[b["id"]].id


async def test_domain_limit_counts_every_tenant(tmp_path: Path) -> None:
    async with ReplyHarness(tmp_path, per_domain_limit=2, per_sender_limit=0) as h:
        envs = []
        for i, tenant in enumerate(["default", "acme", "globex"]):
            rcpt = (
                "support@example.test"
                if tenant == "default"
                else f"x@{tenant}.support.example.test"
            )
            envs.append(
                await h.deliver(
                    message(f"Q{i}", to=rcpt),
                    mail_from=f"user{i}@victim.example",
                    rcpt_to=[rcpt],
                    tenant=tenant,
                )
            )
    assert [e["reply"]["queued"] for e in envs] == [True, True, False]
    assert envs[2]["reply"]["reason"] == "domain-limit"


async def test_no_address_of_the_tenant_means_no_reply(tmp_path: Path) -> None:
    """A message of tenant acme whose recipients are not acme's (replayed, hand-spooled)."""
    async with ReplyHarness(tmp_path) as h:
        env = await h.deliver(message(), tenant="acme", rcpt_to=["support@example.test"])
    assert env["reply"]["reason"] == "no-tenant-address"
