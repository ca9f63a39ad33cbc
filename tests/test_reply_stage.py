"""The respond stage over the real pipeline and a real SqliteStore: what is queued, what is not."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.support.reply_harness import ReplyHarness, message

RETURN_PATH = "alice.return@example.org"


def parsed(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


async def reply_bytes(h: ReplyHarness, env: dict[str, Any]) -> bytes:
    return await h.reply_bytes(env["reply"]["outboxId"])


async def test_human_message_is_acknowledged_with_rfc3834_headers(tmp_path: Path) -> None:
    raw = message(
        "Re: RE: Fwd: Help with my order",
        sender="Alice Example <alice@example.org>",
        message_id="<orig-1@mail.example.org>",
        headers="References: <root@mail.example.org> <mid@mail.example.org>\r\n"
        "In-Reply-To: <mid@mail.example.org>\r\nReply-To: attacker@evil.test\r\n",
    )
    async with ReplyHarness(tmp_path) as h:
        env = await h.deliver(raw, mail_from=RETURN_PATH)
        assert env["reply"]["queued"] is True
        assert env["reply"]["template"] == "ack"
        assert env["reply"]["to"] == RETURN_PATH
        ticket = env["thread"]["ticket"]
        assert ticket and ticket.startswith("T-")
        rows = await h.outbox()
        assert [r.state for r in rows] == ["pending"]
        row = rows[0]
        assert row.recipient == RETURN_PATH
        assert row.mail_from == ""  # MAIL FROM:<> by default (RFC 3834 section 3.3)
        assert row.ticket == ticket and row.thread_id == env["thread"]["id"]
        msg = parsed(await reply_bytes(h, env))
    assert msg["To"] == RETURN_PATH  # the return path: not From, not the Reply-To a spoofer set
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert msg["In-Reply-To"] == "<orig-1@mail.example.org>"
    assert msg["References"].split() == [
        "<root@mail.example.org>",
        "<mid@mail.example.org>",
        "<orig-1@mail.example.org>",
    ]
    assert msg["Subject"] == f"Re: Help with my order [Ticket {ticket}]"
    assert msg["Reply-To"].addresses[0].addr_spec == f"support+{ticket}@example.test"
    assert msg["From"].addresses[0].addr_spec == "support@example.test"
    assert msg["Message-ID"] == env["reply"]["messageId"]
    assert msg["Message-ID"] != "<orig-1@mail.example.org>"
    body = msg.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "Alice Example" in text and ticket in text


LOOP_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("auto-replied", {"headers": "Auto-Submitted: auto-replied\r\n"}, "auto-submitted"),
    ("auto-generated", {"headers": "Auto-Submitted: auto-generated (cron)\r\n"}, "auto-submitted"),
    ("precedence-bulk", {"headers": "Precedence: bulk\r\n"}, "precedence"),
    ("precedence-list", {"headers": "Precedence: list\r\n"}, "precedence"),
    ("precedence-junk", {"headers": "Precedence: junk\r\n"}, "precedence"),
    ("list-id", {"headers": "List-Id: Announce <announce.example.org>\r\n"}, "mailing-list"),
    (
        "list-unsubscribe",
        {"headers": "List-Unsubscribe: <mailto:leave@example.org>\r\n"},
        "mailing-list",
    ),
    ("suppress-oof", {"headers": "X-Auto-Response-Suppress: OOF, AutoReply\r\n"}, None),
    ("x-autoreply", {"headers": "X-Autoreply: yes\r\n"}, None),
    ("mailgate-loop", {"headers": "X-Mailgate-Loop: other.example\r\n"}, None),
]


@pytest.mark.parametrize(("case", "kwargs", "reason"), LOOP_CASES, ids=[c[0] for c in LOOP_CASES])
async def test_automated_headers_get_no_reply(
    tmp_path: Path, case: str, kwargs: dict[str, Any], reason: str | None
) -> None:
    async with ReplyHarness(tmp_path) as h:
        env = await h.deliver(message(**kwargs), mail_from=RETURN_PATH)
        assert env["reply"]["queued"] is False
        assert env["reply"]["sent"] is False
        if reason is not None:
            assert env["reply"]["reason"] == reason
        else:
            assert env["reply"]["reason"] in ("suppress-requested", "loop")
        assert await h.outbox() == []


SENDER_CASES = [
    ("", "null-sender"),
    ("MAILER-DAEMON@mx.example.org", "role-sender"),
    ("postmaster@example.org", "role-sender"),
    ("noreply@example.org", "role-sender"),
    ("no-reply@shop.example.org", "role-sender"),
    ("do-not-reply@example.org", "role-sender"),
    ("bounces+1234@mailer.example.org", "role-sender"),
    ("announce-owner@lists.example.org", "role-sender"),
    ("carol@example.test", "own-address"),
    ("agent@acme.support.example.test", "own-address"),
    ("not an address", "invalid-return-path"),
]


@pytest.mark.parametrize(("mail_from", "reason"), SENDER_CASES)
async def test_automated_and_own_senders_get_no_reply(
    tmp_path: Path, mail_from: str, reason: str
) -> None:
    async with ReplyHarness(tmp_path) as h:
        env = await h.deliver(message(), mail_from=mail_from)
        assert env["reply"]["queued"] is False
        assert env["reply"]["reason"] == reason
        assert await h.outbox() == []


async def test_from_header_of_a_noreply_sender_is_enough(tmp_path: Path) -> None:
    async with ReplyHarness(tmp_path) as h:
        env = await h.deliver(
            message(sender="Shop <noreply@shop.example.org>"), mail_from="bounce-x@example.org"
        )
        assert env["reply"]["reason"] == "role-sender"


BOUNCE = (
    b"From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\n"
    b"To: support@example.test\r\nSubject: Undelivered Mail Returned to Sender\r\n"
    b"Message-ID: <bounce-1@mx.example.org>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
    b"--b\r\nContent-Type: message/delivery-status\r\n\r\n"
    b"Reporting-MTA: dns; mx.example.org\r\n\r\n"
    b"Final-Recipient: rfc822; gone@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
    b"--b--\r\n"
)


async def test_a_bounce_gets_no_reply_even_with_a_return_path(tmp_path: Path) -> None:
    async with ReplyHarness(tmp_path) as h:
        env = await h.deliver(BOUNCE, mail_from="relay@mx.example.org")
        assert env["reply"]["queued"] is False
        assert env["reply"]["reason"] == "bounce"
        assert await h.outbox() == []


async def test_dmarc_fail_gets_no_reply_unless_configured(tmp_path: Path) -> None:
    auth = {"dmarc": {"passed": False, "result": "fail", "domain": "example.org"}}
    async with ReplyHarness(tmp_path) as h:
        env = await h.deliver(message(), mail_from=RETURN_PATH, auth=auth)
        assert env["reply"]["reason"] == "dmarc-fail"
        h.with_reply(skip_dmarc_fail=False)
        env = await h.deliver(message(), mail_from=RETURN_PATH, auth=auth)
        assert env["reply"]["queued"] is True


async def test_rule_can_silence_or_choose_a_template(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "billing-ack.txt").write_text(
        "Billing got it: {{ ticket }} / {{ queue }} / {{ sla }} / {{ entities.orderId[0] }}\n"
        "{% for l in kb_links %}{{ l.title }} <{{ l.url }}>\n{% endfor %}"
    )
    (tmp_path / "templates" / "billing-ack.html").write_text(
        "<html><body><p>Billing got it, {{ name }}</p></body></html>"
    )
    rules = [
        {"name": "quiet", "if": {"subject": "/newsletter/i"}, "then": {"reply": False}},
        {
            "name": "billing",
            "if": {"subject": "/invoice/i"},
            "then": {"queue": "billing", "reply": "billing-ack"},
        },
    ]
    async with ReplyHarness(
        tmp_path,
        rules=rules,
        sla={"billing": "one business day", "default": "two days"},
        kb_links={"billing": [{"title": "Billing FAQ", "url": "https://help.example.test/b"}]},
        footer="Example Ltd · 1 Main St",
    ) as h:
        env = await h.deliver(message("Our newsletter"), mail_from=RETURN_PATH)
        assert env["reply"] == {
            "queued": False,
            "sent": False,
            "reason": "rule",
            "detail": "a rule set reply = false",
        }
        env = await h.deliver(
            message("Invoice <script>x</script> question", sender="Bob <b@example.org>"),
            mail_from="b@example.org",
        )
        assert env["reply"]["template"] == "billing-ack"
        msg = parsed(await reply_bytes(h, env))
    assert msg.get_content_type() == "multipart/alternative"
    plain = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert plain is not None and html is not None
    text = plain.get_content().replace("\r\n", "\n")
    assert (
        f"Billing got it: {env['thread']['ticket']} / billing / one business day / 472100" in text
    )
    assert "Billing FAQ <https://help.example.test/b>" in text
    assert text.rstrip().endswith("-- \nExample Ltd · 1 Main St")
    html_text = html.get_content()
    assert "Billing got it, Bob" in html_text
    assert "Example Ltd · 1 Main St" in html_text


async def test_html_template_escapes_customer_values(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "ack.html").write_text("<p>Hi {{ name }}: {{ subject }}</p>")
    async with ReplyHarness(tmp_path) as h:
        env = await h.deliver(
            message("<img src=x onerror=alert(1)>", sender='"<b>Eve</b>" <eve@example.org>'),
            mail_from="eve@example.org",
        )
        msg = parsed(await reply_bytes(h, env))
    html = msg.get_body(("html",))
    assert html is not None
    content = html.get_content()
    assert "<img" not in content and "<b>" not in content
    assert "&lt;img src=x onerror=alert(1)&gt;" in content


async def test_crlf_in_subject_and_name_does_not_inject_headers(tmp_path: Path) -> None:
    # CR/LF smuggled in RFC 2047 encoded words decode to real line breaks in the envelope
    subject = "=?utf-8?q?Hello=0D=0ABcc:_victim@evil.test=0D=0AX-Evil:_1?="
    sender = "=?utf-8?q?Mallory=0D=0ABcc:_victim2@evil.test?= <mallory@example.org>"
    async with ReplyHarness(tmp_path) as h:
        env = await h.deliver(message(subject, sender=sender), mail_from="mallory@example.org")
        assert env["reply"]["queued"] is True
        raw = await reply_bytes(h, env)
    head = raw.split(b"\r\n\r\n", 1)[0]
    names = [
        line.split(b":", 1)[0].lower() for line in head.split(b"\r\n") if line[:1] not in b" \t"
    ]
    assert b"bcc" not in names and b"x-evil" not in names
    msg = parsed(raw)
    assert "\n" not in msg["Subject"] and "\r" not in msg["Subject"]
    assert msg["Subject"].startswith("Re: Hello")
    assert "victim@evil.test" in msg["Subject"]  # kept as harmless text, on one line
    assert msg["Subject"].endswith(f"[Ticket {env['thread']['ticket']}]")
    assert msg["To"] == "mallory@example.org"


async def test_per_thread_limit_holds(tmp_path: Path) -> None:
    async with ReplyHarness(tmp_path) as h:
        first = await h.deliver(message(message_id="<t1@mail.example.org>"), mail_from=RETURN_PATH)
        assert first["reply"]["queued"] is True
        follow_up = message(
            "Re: Help with my order",
            message_id="<t2@mail.example.org>",
            headers="In-Reply-To: <t1@mail.example.org>\r\n",
        )
        second = await h.deliver(follow_up, mail_from=RETURN_PATH)
        assert second["thread"]["id"] == first["thread"]["id"]
        assert second["reply"]["reason"] == "thread-limit"
        assert len(await h.outbox()) == 1


async def test_customer_answer_to_the_acknowledgement_threads_by_in_reply_to(
    tmp_path: Path,
) -> None:
    async with ReplyHarness(tmp_path) as h:
        first = await h.deliver(message(), mail_from=RETURN_PATH)
        answer = message(
            "Re: whatever",
            headers=f"In-Reply-To: {first['reply']['messageId']}\r\n",
        )
        second = await h.deliver(answer, mail_from=RETURN_PATH)
        assert second["thread"]["id"] == first["thread"]["id"]
        assert second["thread"]["matchedBy"] == "in-reply-to"


async def test_per_sender_limit_holds_across_threads(tmp_path: Path) -> None:
    async with ReplyHarness(tmp_path) as h:
        reasons = []
        for i in range(5):
            env = await h.deliver(message(f"Question {i}"), mail_from=RETURN_PATH)
            reasons.append(env["reply"].get("reason", "queued"))
        assert reasons == ["queued", "queued", "queued", "sender-limit", "sender-limit"]
        other = await h.deliver(message("Hi"), mail_from="someone.else@example.org")
        assert other["reply"]["queued"] is True
        assert len(await h.outbox()) == 4


async def test_global_hourly_cap_holds(tmp_path: Path) -> None:
    async with ReplyHarness(tmp_path, global_hourly_cap=2) as h:
        states = []
        for i in range(4):
            env = await h.deliver(message(f"Q{i}"), mail_from=f"user{i}@example.org")
            states.append(env["reply"].get("reason", "queued"))
        assert states == ["queued", "queued", "global-cap", "global-cap"]


async def test_limits_are_enforced_again_in_the_transaction(tmp_path: Path) -> None:
    """Two runs that both passed the look-up (parallel workers): the second is suppressed."""
    async with ReplyHarness(tmp_path, per_sender_limit=1) as h:
        a = await h.spool(message("one"), mail_from=RETURN_PATH)
        b = await h.spool(message("two"), mail_from=RETURN_PATH)
        out_a = await h.run(a)
        out_b = await h.run(b)
        assert a["reply"]["queued"] and b["reply"]["queued"]
        await h.complete(a, out_a)
        await h.complete(b, out_b)
        rows = await h.outbox()
        assert [(r.state, r.reason) for r in rows] == [
            ("pending", None),
            ("suppressed", "sender-limit"),
        ]


async def test_a_replayed_message_is_not_acknowledged_twice(tmp_path: Path) -> None:
    async with ReplyHarness(tmp_path) as h:
        env = await h.deliver(message(), mail_from=RETURN_PATH)
        again = dict(env)
        outcome = await h.run(again, mode="replay")
        assert again["reply"]["reason"] == "already-acknowledged"
        assert not [i for i in outcome.intents if type(i).__name__ == "ReplyIntent"]
        assert len(await h.outbox()) == 1


async def test_banner_is_added_until_cleared(tmp_path: Path) -> None:
    async with ReplyHarness(tmp_path) as h:
        await h.store.set_banner("triage", "We are investigating an outage.", by="test")
        await h.store.set_banner("", "Office closed on Friday.", by="test")
        env = await h.deliver(message("A"), mail_from="a@example.org")
        text = parsed(await reply_bytes(h, env)).get_body(("plain",))
        assert text is not None
        content = text.get_content()
        assert content.index("We are investigating") < content.index("Office closed")
        assert content.index("Office closed") < content.index("Hello")
        await h.store.clear_banner("triage")
        await h.store.clear_banner("")
        env = await h.deliver(message("B"), mail_from="b@example.org")
        text = parsed(await reply_bytes(h, env)).get_body(("plain",))
        assert text is not None
        assert "outage" not in text.get_content()


async def test_banner_of_another_queue_is_not_added(tmp_path: Path) -> None:
    async with ReplyHarness(tmp_path) as h:
        await h.store.set_banner("status", "Status incident.", by="test")
        env = await h.deliver(message(), mail_from="a@example.org")
        text = parsed(await reply_bytes(h, env)).get_body(("plain",))
        assert text is not None
        assert "Status incident" not in text.get_content()


async def test_hostile_template_is_refused_and_nothing_is_queued(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "evil.txt").write_text("{{ ''.__class__.__mro__ }}")
    rules = [{"name": "all", "then": {"reply": "evil"}}]
    async with ReplyHarness(tmp_path, rules=rules) as h:
        env = await h.deliver(message(), mail_from=RETURN_PATH)
        assert env["reply"]["queued"] is False
        assert env["reply"]["reason"] == "template-refused"
        assert "private attribute" in env["reply"]["detail"]
        assert await h.outbox() == []


async def test_missing_template_is_recorded(tmp_path: Path) -> None:
    rules = [{"name": "all", "then": {"reply": "nope"}}]
    async with ReplyHarness(tmp_path, rules=rules) as h:
        env = await h.deliver(message(), mail_from=RETURN_PATH)
        assert env["reply"]["reason"] == "template-missing"


async def test_disabled_replies_leave_no_trace(tmp_path: Path) -> None:
    async with ReplyHarness(tmp_path, enabled=False) as h:
        env = await h.deliver(message(), mail_from=RETURN_PATH)
        assert "reply" not in env
        assert await h.outbox() == []


async def test_envelope_sender_of_the_reply_can_be_our_address(tmp_path: Path) -> None:
    async with ReplyHarness(tmp_path, null_sender=False) as h:
        await h.deliver(message(), mail_from=RETURN_PATH)
        rows = await h.outbox()
        assert rows[0].mail_from == "support@example.test"


async def test_tenant_from_address_is_used_for_that_tenant(tmp_path: Path) -> None:
    async with ReplyHarness(
        tmp_path, tenant_from={"acme": "Acme Help <help@acme.support.example.test>"}
    ) as h:
        env = await h.deliver(
            message(to="help@acme.support.example.test"),
            mail_from=RETURN_PATH,
            rcpt_to=["help@acme.support.example.test"],
            tenant="acme",
        )
        assert env["tenant"] == "acme"
        msg = parsed(await reply_bytes(h, env))
    ticket = env["thread"]["ticket"]
    assert msg["From"].addresses[0].addr_spec == "help@acme.support.example.test"
    assert msg["Reply-To"].addresses[0].addr_spec == f"help+{ticket}@acme.support.example.test"


async def test_return_path_case_is_kept_but_limits_ignore_case(tmp_path: Path) -> None:
    srs = "SRS0=HhAb=XY=example.org=Alice@forwarder.example.net"
    async with ReplyHarness(tmp_path, per_sender_limit=1) as h:
        env = await h.deliver(message("one"), mail_from=srs)
        assert env["reply"]["to"] == srs
        assert (await h.outbox())[0].recipient == srs
        again = await h.deliver(message("two"), mail_from=srs.lower())
        assert again["reply"]["reason"] == "sender-limit"


async def test_dry_run_reports_what_would_be_sent_without_queueing(tmp_path: Path) -> None:
    from mailgate.pipeline.runner import EmptyPorts, PipelineRunner
    from mailgate.pipeline.stages import registry
    from mailgate.store.replies import ReplyIntent

    assert "respond" in registry()
    async with ReplyHarness(tmp_path) as h:
        env = await h.spool(message(), mail_from=RETURN_PATH)
        outcome = await PipelineRunner(h.cfg, EmptyPorts()).process(env, mode="dry-run")
    assert env["reply"]["reason"] == "dry-run" and env["reply"]["template"] == "ack"
    assert not [i for i in outcome.intents if isinstance(i, ReplyIntent)]
    respond = next(r for r in outcome.results if r.stage == "respond")
    assert any("would acknowledge" in n for n in respond.reasons)


async def test_undecodable_text_in_the_envelope_does_not_break_the_commit(tmp_path: Path) -> None:
    async with ReplyHarness(tmp_path) as h:
        env = await h.spool(message(), mail_from=RETURN_PATH)
        env["subject"] = "broken \udcff subject"
        env["from"] = {"email": "alice@example.org", "name": "Al\udcffice"}
        outcome = await h.run(env)
        env["subject"] = "stored"  # the envelope itself is not this stage's to clean
        env["from"]["name"] = "Alice"
        # only this stage's writes (the thread index is another stage's concern)
        outcome.intents[:] = [i for i in outcome.intents if type(i).__name__ == "ReplyIntent"]
        await h.complete(env, outcome)
        msg = parsed(await reply_bytes(h, env))
    assert msg["Subject"].startswith("Re: broken \ufffd subject")
