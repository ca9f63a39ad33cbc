"""The pure parts of auto-replies: subjects, threading headers, the guard, templates, signing."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.config import DomainConfig
from mailgate.reply.compose import (
    ReplyHeaders,
    alias_address,
    build_message,
    clean,
    references_for,
    reply_message_id,
    reply_subject,
)
from mailgate.reply.guard import Guard, OwnDomains, is_role_address, is_valid_address
from mailgate.reply.signing import SigningError, load_signer
from mailgate.reply.templates import (
    ReplyTemplates,
    TemplateMissing,
    TemplateRefused,
    decorate_html,
)

# ---------------------------------------------------------------------------- subject


@pytest.mark.parametrize(
    ("original", "expected"),
    [
        ("Help", "Re: Help [Ticket T-7]"),
        ("Re: Help", "Re: Help [Ticket T-7]"),
        ("RE: re: Fwd: AW: Help", "Re: Help [Ticket T-7]"),
        ("Re: Help [Ticket T-7]", "Re: Help [Ticket T-7]"),
        ("Re: [Ticket T-7] Re: Help [ticket t-7]", "Re: Help [Ticket T-7]"),
        ("Re[2]: Help", "Re: Help [Ticket T-7]"),
        ("SV: VS: Antw: Help", "Re: Help [Ticket T-7]"),
        ("回复: 帮助", "Re: 帮助 [Ticket T-7]"),
        ("Help [Ticket T-3]", "Re: Help [Ticket T-7]"),  # a stale token of another ticket
        ("", "Re: (no subject) [Ticket T-7]"),
        (None, "Re: (no subject) [Ticket T-7]"),
        ("Line\r\nBcc: x@evil.test", "Re: Line Bcc: x@evil.test [Ticket T-7]"),
        ("Regarding the invoice", "Re: Regarding the invoice [Ticket T-7]"),
    ],
)
def test_reply_subject(original: object, expected: str) -> None:
    assert reply_subject(original, "T-7") == expected


def test_reply_subject_without_ticket_and_long_subjects() -> None:
    assert reply_subject("Re: Help", None) == "Re: Help"
    long = reply_subject("x" * 5000, "T-1")
    assert len(long) < 250 and long.endswith("… [Ticket T-1]")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300), st.sampled_from(["T-1", "T-1042", None]))
def test_reply_subject_is_one_line_and_never_stacks(original: str, ticket: str | None) -> None:
    once = reply_subject(original, ticket)
    assert not any(c in once for c in "\r\n\x00")
    assert once.startswith("Re: ")
    assert reply_subject(once, ticket) == once
    if ticket:
        assert once.count(f"[Ticket {ticket}]") == 1


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200), st.text(max_size=80))
def test_built_message_has_exactly_our_headers(subject: str, text: str) -> None:
    headers = ReplyHeaders(
        from_name=clean("Support\r\nBcc: evil@x.test"),
        from_address="support@example.test",
        to="alice@example.org",
        subject=reply_subject(subject, "T-5"),
        message_id="<ack.1@example.test>",
        reply_to="support+T-5@example.test",
        in_reply_to="<orig@example.org>",
        references=["<orig@example.org>"],
        ticket="T-5",
    )
    raw = build_message(headers, text, None)
    head = raw.split(b"\r\n\r\n", 1)[0]
    names = {
        line.split(b":", 1)[0].decode().lower()
        for line in head.split(b"\r\n")
        if line[:1] not in (b" ", b"\t")
    }
    assert names == {
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "reply-to",
        "auto-submitted",
        "x-auto-response-suppress",
        "x-mailgate-loop",
        "x-mailgate-ticket",
        "content-type",
        "content-transfer-encoding",
        "mime-version",
    }
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Subject"] == headers.subject
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))


def test_clean_makes_one_encodable_line() -> None:
    assert clean("a\r\nb\x00c\u2028d") == "a b c d"
    assert clean("bad \udcff byte") == "bad \ufffd byte"
    assert clean(None) == "" and clean(42) == ""
    assert len(clean("x" * 2000, 100)) == 100


def test_threading_headers() -> None:
    refs = [f"<r{i}@x.test>" for i in range(30)]
    chain = references_for("<me@x.test>", refs, None)
    assert chain[0] == "<r0@x.test>" and chain[-1] == "<me@x.test>" and len(chain) == 10
    assert references_for("<me@x.test>", [], "<parent@x.test> <junk@x.test>") == [
        "<parent@x.test>",
        "<me@x.test>",
    ]
    assert references_for(None, ["bogus", "<ok@x.test>\r\nBcc: y"], None) == ["<ok@x.test>"]
    assert reply_message_id("msg_01ABC", "example.test") == "<ack.01abc@example.test>"
    assert alias_address("support@example.test", "T-9") == "support+T-9@example.test"
    assert alias_address("support+old@example.test", "T-9") == "support+T-9@example.test"
    assert alias_address("support@example.test", None) == "support@example.test"


# ---------------------------------------------------------------------------- guard


@pytest.mark.parametrize(
    "address",
    ["MAILER-DAEMON@x.test", "postmaster@x.test", "noreply@x.test", "no_reply@x.test",
     "donotreply@x.test", "do-not-reply@x.test", "bounce@x.test", "bounces+abc=x@x.test",
     "list-owner@x.test", "owner-list@x.test", "list-request@x.test", "list-bounces@x.test",
     "notifications@github.test", "mailer-daemon@x.test"],
)  # fmt: skip
def test_role_addresses(address: str) -> None:
    assert is_role_address(address)


@pytest.mark.parametrize(
    "address",
    ["alice@x.test", "bounty.hunter@x.test", "prvs=123=alice@x.test", "owner@x.test",
     "noreen@x.test", "SRS0=ab=cd=example.org=alice@fwd.test"],
)  # fmt: skip
def test_people_are_not_role_addresses(address: str) -> None:
    assert not is_role_address(address)


@pytest.mark.parametrize(
    ("address", "ok"),
    [
        ("alice@example.org", True),
        ("a.b+tag@sub.example.org", True),
        ("user@[192.0.2.1]", True),
        ("alice@localhost", False),
        ("alice", False),
        ("a b@example.org", False),
        ("a@b@example.org", False),
        ("alice@example.org\r\nRCPT TO:<x@y>", False),
        ("<alice@example.org>", False),
        ("x" * 65 + "@example.org", False),
    ],
)
def test_valid_return_paths(address: str, ok: bool) -> None:
    assert is_valid_address(address) is ok


def guard_env(**overrides: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "from": {"email": "alice@example.org", "name": "Alice"},
        "headers": {"Subject": "hi"},
        "envelope": {"mailFrom": "alice@example.org"},
        "intent": "human",
        "bounce": None,
        "dmarc": {"result": "pass"},
    }
    env.update(overrides)
    return env


GUARD = Guard(
    OwnDomains(
        [DomainConfig(name="example.test"), DomainConfig(name="*.support.example.test")],
        ["help@other.test"],
    )
)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({}, None),
        ({"headers": {"Auto-Submitted": "no"}}, None),
        ({"headers": {"Auto-Submitted": "No (manual)"}}, None),
        ({"headers": {"auto-submitted": "auto-notified"}}, "auto-submitted"),
        ({"headers": {"Auto-Submitted": ["no", "auto-replied"]}}, "auto-submitted"),
        ({"headers": {"Precedence": "Bulk"}}, "precedence"),
        ({"headers": {"List-Post": "<mailto:l@x.test>"}}, "mailing-list"),
        ({"headers": {"Content-Type": "multipart/report; report-type=delivery-status"}}, "bounce"),
        ({"headers": {"X-Loop": "helpdesk@acme.support.example.test"}}, "loop"),
        ({"headers": {"X-Loop": "someone@elsewhere.test"}}, None),
        ({"envelope": {"mailFrom": "<>"}}, "null-sender"),
        ({"envelope": {"mailFrom": "help@other.test"}}, "own-address"),
        ({"from": {"email": "x@sub.support.example.test"}}, "own-address"),
        ({"intent": "out-of-office"}, "not-human"),
        ({"intent": "ticket-system-ack"}, "not-human"),
        ({"bounce": {"recipients": ["x@y.test"]}}, "bounce"),
        ({"dmarc": {"result": "FAIL", "domain": "example.org"}}, "dmarc-fail"),
        ({"duplicateOf": "msg_1"}, "duplicate"),
        ({"headers": {"X-Auto-Response-Suppress": "DR, RN"}}, None),
        ({"headers": {"X-Auto-Response-Suppress": "All"}}, "suppress-requested"),
    ],
)
def test_guard(overrides: dict[str, Any], reason: str | None) -> None:
    found = GUARD.check(guard_env(**overrides))
    assert (found.reason if found else None) == reason


def test_guard_dmarc_is_configurable() -> None:
    lenient = Guard(OwnDomains([]), skip_dmarc_fail=False)
    assert lenient.check(guard_env(dmarc={"result": "fail"})) is None


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["Auto-Submitted", "Precedence", "List-Id", "X-Loop", "Content-Type"]),
        st.one_of(st.text(max_size=40), st.lists(st.text(max_size=20), max_size=3), st.none()),
    ),
    st.one_of(st.none(), st.text(max_size=40), st.integers()),
)
def test_guard_never_raises_on_odd_envelopes(headers: dict[str, Any], mail_from: Any) -> None:
    GUARD.check(guard_env(headers=headers, envelope={"mailFrom": mail_from}, dmarc=None))


# ---------------------------------------------------------------------------- templates


def test_builtin_ack_renders_without_a_directory() -> None:
    out = ReplyTemplates(None).render(
        "ack", {"name": "Bo", "ticket": "T-3", "sla": "a day", "kb_links": []}, footer="Legal"
    )
    assert "Hello Bo," in out.text and "T-3" in out.text and "within a day" in out.text
    assert out.text.endswith("-- \nLegal\n") and out.html is None


def test_tenant_template_overrides_the_shared_one(tmp_path: Path) -> None:
    (tmp_path / "acme").mkdir()
    (tmp_path / "ack.txt").write_text("shared {{ ticket }}")
    (tmp_path / "acme" / "ack.txt").write_text("acme {{ ticket }}")
    t = ReplyTemplates(tmp_path)
    assert t.render("ack", {"ticket": "T-1"}, tenant="acme").text == "acme T-1\n"
    assert t.render("ack", {"ticket": "T-1"}, tenant="other").text == "shared T-1\n"
    assert t.render("ack", {"ticket": "T-1"}, tenant="../etc").text == "shared T-1\n"


def test_template_names_cannot_escape_the_directory(tmp_path: Path) -> None:
    t = ReplyTemplates(tmp_path)
    for name in ("../secret", "a/b", "", ".hidden"):
        with pytest.raises(TemplateMissing):
            t.render(name, {})


def test_templates_cannot_mutate_or_reach_internals(tmp_path: Path) -> None:
    (tmp_path / "mut.txt").write_text("{{ kb_links.append(1) }}")
    (tmp_path / "fmt.txt").write_text("{{ '{0.__class__}'.format(name) }}")
    (tmp_path / "big.txt").write_text("{% for a in range(3000) %}{{ range(100)|join }}{% endfor %}")
    t = ReplyTemplates(tmp_path, max_output=10_000)
    for name in ("mut", "fmt", "big"):
        with pytest.raises(TemplateRefused):
            t.render(name, {"kb_links": [], "name": "x"})


def test_a_template_fixed_on_disk_is_checked_again(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    path.write_text("{{ ''.__class__ }}")
    t = ReplyTemplates(tmp_path)
    with pytest.raises(TemplateRefused):
        t.render("x", {})
    path.write_text("fine {{ ticket }}")
    import os

    os.utime(path, (path.stat().st_atime + 5, path.stat().st_mtime + 5))
    assert t.render("x", {"ticket": "T-2"}).text == "fine T-2\n"


def test_html_decoration_places_banner_and_footer_inside_body() -> None:
    html = decorate_html("<html><body><p>Hi</p></body></html>", ["Outage <now>"], "Ltd\nStreet")
    assert html.index("Outage &lt;now&gt;") < html.index("<p>Hi</p>") < html.index("Ltd<br>")
    assert html.endswith("</body></html>")


# ---------------------------------------------------------------------------- signing


def test_signer_configuration(tmp_path: Path) -> None:
    assert load_signer("", "", "") is None
    with pytest.raises(SigningError):
        load_signer("example.test", "s", str(tmp_path / "missing.pem"))
    junk = tmp_path / "junk.key"
    junk.write_text("not a key")
    with pytest.raises(SigningError):
        load_signer("example.test", "s", str(junk))
