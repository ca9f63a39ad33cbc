"""Loop protection (reply/guard.py), rule by rule: what must never be acknowledged and why.

Kept apart from tests/test_reply_units.py so that `sh scripts/mutate_loop_guard.sh` can run
both quickly; each case pins the reason token and the words of its detail, because the outbox
listing and ``env.reply`` show them to operators.
"""

from __future__ import annotations

from typing import Any

import pytest

from mailgate.config import DomainConfig
from mailgate.envelope import LOOP_HEADER
from mailgate.reply.guard import (
    Guard,
    OwnDomains,
    Skip,
    header_token,
    is_role_address,
    is_valid_address,
)
from mailgate.reply.return_path import describe, return_path_problem


def own() -> OwnDomains:
    """Built per call, not at import: mutation testing swaps code in after the import."""
    return OwnDomains(
        [DomainConfig(name="Example.Test."), DomainConfig(name="*.support.example.test")],
        ["Help@Other.Test", ""],
    )


def env_with(**overrides: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "from": {"email": "alice@customer.test", "name": "Alice"},
        "headers": {"Subject": "hi"},
        "envelope": {"mailFrom": "alice@customer.test"},
        "intent": "human",
        "bounce": None,
        "dmarc": {"result": "pass"},
    }
    env.update(overrides)
    return env


def skip(**overrides: Any) -> Skip | None:
    return Guard(own()).check(env_with(**overrides))


def reason(**overrides: Any) -> str | None:
    found = skip(**overrides)
    return found.reason if found else None


# ---------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("address", "ok"),
    [
        ("alice@customer.test", True),
        ("a.b+tag@mail.customer.test", True),
        ("v@[10.0.0.1]", True),  # an address literal is an address; return_path_problem refuses it
        ("alice@localhost", False),  # no dot in the domain
        ("alice", False),
        ("@customer.test", False),
        ("alice@", False),
        ("al ice@customer.test", False),
        ('"al"@customer.test', False),
        ("a@b@customer.test", False),
        ("alice@customer..test", False),
        ("alice@.customer.test", False),
        ("x" * 64 + "@customer.test", True),
        ("x" * 65 + "@customer.test", False),
        ("alice@customer.test\n", False),
    ],
)
def test_valid_address(address: str, ok: bool) -> None:
    assert is_valid_address(address) is ok


def test_valid_address_length_limit_is_254() -> None:
    domain = "d" * 63 + "." + "e" * 63 + "." + "f" * 59 + "." + "g"
    local = "l" * 64
    assert len(f"{local}@{domain}") == 254
    assert is_valid_address(f"{local}@{domain}")
    assert not is_valid_address(f"{local}@{domain}g")  # 255: one too many
    assert not is_valid_address(f"{local}x@{domain}")


@pytest.mark.parametrize(
    "address",
    [
        "MAILER-DAEMON@mx.customer.test",
        "mailerdaemon@x.test",
        "mail-daemon@x.test",
        "postmaster@x.test",
        "listserv@x.test",
        "majordomo@x.test",
        "mailman@x.test",
        "daemon@x.test",
        "root@x.test",
        "nobody@x.test",
        "autoresponder@x.test",
        "auto-reply@x.test",
        "autoreply@x.test",
        "auto-responder@x.test",
        "noreply@x.test",
        "no-reply@x.test",
        "no_reply.billing@x.test",
        "NoReply123@x.test",
        "do-not-reply@x.test",
        "donotreply@x.test",
        "dont_reply@x.test",
        "bounce@x.test",
        "bounces@x.test",
        "bounces+alice=customer.test@x.test",
        "bounce-12345@x.test",
        "owner-support@lists.x.test",
        "support-owner@lists.x.test",
        "support-request@lists.x.test",
        "news-bounces@lists.x.test",
        "news-bounce=alice@lists.x.test",
        "notification@x.test",
        "notifications@x.test",
        "notify@x.test",
        "alert@x.test",
        "alerts@x.test",
        "postmaster",
    ],
)
def test_role_addresses(address: str) -> None:
    assert is_role_address(address)


@pytest.mark.parametrize(
    "address",
    [
        "alice@x.test",
        "bouncer@x.test",
        "rooted@x.test",
        "owner@x.test",
        "request@x.test",
        "replies@x.test",
        "notifier-team@x.test",
        "",
        "@x.test",
        "-owner@x.test",
    ],
)
def test_people_are_not_role_addresses(address: str) -> None:
    assert not is_role_address(address)


@pytest.mark.parametrize(
    ("value", "token"),
    [
        ("auto-replied", "auto-replied"),
        ("  Auto-Replied (vacation) ; reason=oof", "auto-replied"),
        ("(comment) no", "no"),
        ("no\x00", "no"),
        ("multipart/report; report-type=delivery-status", "multipart/report"),
        ("auto-replied; a=1; b=2", "auto-replied"),
        ("", ""),
    ],
)
def test_header_token(value: str, token: str) -> None:
    assert header_token(value) == token


# ---------------------------------------------------------------- our own domains


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("example.test", True),
        ("EXAMPLE.TEST.", True),
        ("support.example.test", True),  # the wildcard's parent
        ("acme.support.example.test", True),
        ("a.b.support.example.test", True),
        ("notsupport.example.test", False),
        ("mail.example.test", False),  # only the named domain, not its subdomains
        ("evilexample.test", False),
        ("other.test", True),  # the domain of a configured reply address
        ("customer.test", False),
    ],
)
def test_own_domains(domain: str, expected: bool) -> None:
    assert own().is_own_domain(domain) is expected


def test_own_addresses() -> None:
    assert own().is_own("help@other.test")
    assert own().is_own("HELP@OTHER.TEST")
    assert own().is_own("anyone@acme.support.example.test")
    assert not own().is_own("alice@customer.test")
    assert not own().is_own("example.test")  # no @: not an address in our domain
    assert "" not in own().addresses


# ---------------------------------------------------------------- the rules


def test_a_plain_human_message_may_be_answered() -> None:
    assert skip() is None


@pytest.mark.parametrize("mail_from", ["", "<>", "  <>  "])
def test_null_sender(mail_from: str) -> None:
    found = skip(envelope={"mailFrom": mail_from})
    assert found == Skip("null-sender", "empty envelope return path (MAIL FROM:<>)")


def test_no_envelope_at_all_counts_as_null_sender() -> None:
    assert reason(envelope=None) == "null-sender"


@pytest.mark.parametrize(
    "mail_from",
    ["alice%customer.test@relay.test", "v@[10.0.0.1]", "relay!alice", "@a.test:alice@b.test"],
)
def test_return_paths_that_are_not_plain_addresses(mail_from: str) -> None:
    found = skip(envelope={"mailFrom": mail_from})
    problem = return_path_problem(mail_from)
    assert problem is not None
    assert found == Skip("invalid-return-path", describe(problem))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("no", None),
        ("No (manual)", None),
        ("auto-replied", "Auto-Submitted: auto-replied"),
        ("auto-generated; x=y", "Auto-Submitted: auto-generated"),
        ("", "Auto-Submitted: (empty)"),
        (["no", "auto-notified"], "Auto-Submitted: auto-notified"),
    ],
)
def test_auto_submitted(value: Any, expected: str | None) -> None:
    found = skip(headers={"auto-submitted": value})
    assert (found.detail if found else None) == expected
    if found:
        assert found.reason == "auto-submitted"


def test_bounce_by_parsed_report() -> None:
    assert skip(bounce={"recipients": ["x@y.test"]}) == Skip(
        "bounce", "a delivery status notification"
    )


def test_bounce_by_content_type() -> None:
    found = skip(headers={"Content-Type": "Multipart/Report; report-type=delivery-status"})
    assert found == Skip("bounce", "Content-Type: multipart/report")
    assert reason(headers={"Content-Type": "multipart/reported"}) is None
    assert reason(headers={"Content-Type": "multipart/mixed"}) is None


def test_bounce_by_intent() -> None:
    assert skip(intent="bounce") == Skip("bounce", "intent: bounce")


@pytest.mark.parametrize("value", ["bulk", "List", "junk", "auto_reply", "auto-reply", "bulk (x)"])
def test_precedence_that_forbids_a_reply(value: str) -> None:
    found = skip(headers={"Precedence": value})
    assert found is not None and found.reason == "precedence"
    assert found.detail == f"Precedence: {header_token(value)}"


@pytest.mark.parametrize("value", ["first-class", "normal", "urgent", ""])
def test_precedence_that_allows_one(value: str) -> None:
    assert reason(headers={"Precedence": value}) is None


@pytest.mark.parametrize("name", ["List-Id", "List-Unsubscribe", "List-Post", "list-id"])
def test_mailing_list_headers(name: str) -> None:
    found = skip(headers={name: "<x>"})
    assert found is not None and found.reason == "mailing-list"
    assert found.detail.endswith("present") and found.detail.lower().startswith(name.lower())


def test_other_list_headers_do_not_count() -> None:
    assert reason(headers={"List-Help": "<mailto:h@x.test>", "List-Archive": "<x>"}) is None


@pytest.mark.parametrize("value", ["All", "OOF", "AutoReply", "DR, OOF", "rn autoreply", "ALL"])
def test_auto_response_suppress_that_asks_for_no_reply(value: str) -> None:
    found = skip(headers={"X-Auto-Response-Suppress": value})
    assert found is not None and found.reason == "suppress-requested"
    assert found.detail.startswith("X-Auto-Response-Suppress: ")


def test_auto_response_suppress_detail_lists_the_tokens_sorted() -> None:
    found = skip(headers={"X-Auto-Response-Suppress": "OOF, DR,  RN"})
    assert found == Skip("suppress-requested", "X-Auto-Response-Suppress: dr,oof,rn")


@pytest.mark.parametrize("value", ["DR", "NDR, RN, NRN", "", " , "])
def test_auto_response_suppress_of_other_kinds(value: str) -> None:
    assert reason(headers={"X-Auto-Response-Suppress": value}) is None


@pytest.mark.parametrize(
    "name",
    [
        "X-Autoreply",
        "X-Autorespond",
        "X-Autoresponder",
        "X-AutoReply-From",
        "X-Mail-Autoreply",
        "X-Autogenerated",
        "X-FC-MachineGenerated",
    ],
)
def test_another_responders_marker(name: str) -> None:
    found = skip(headers={name: "yes"})
    assert found == Skip("suppress-requested", f"{name} present (another responder)")


@pytest.mark.parametrize(
    ("mail_from", "from_", "detail"),
    [
        ("mailer-daemon@mx.x.test", "alice@customer.test", "automated sender mailer-daemon@…"),
        ("alice@customer.test", "noreply@shop.test", "automated sender noreply@…"),
    ],
)
def test_role_senders(mail_from: str, from_: str, detail: str) -> None:
    found = skip(envelope={"mailFrom": mail_from}, **{"from": {"email": from_}})
    assert found == Skip("role-sender", detail)


@pytest.mark.parametrize(
    ("mail_from", "from_"),
    [
        ("help@other.test", "alice@customer.test"),
        ("alice@customer.test", "agent@example.test"),
        ("alice@customer.test", "x@acme.support.example.test"),
    ],
)
def test_own_address(mail_from: str, from_: str) -> None:
    found = skip(envelope={"mailFrom": mail_from}, **{"from": {"email": from_}})
    assert found is not None and found.reason == "own-address"
    assert "one of our own addresses" in found.detail


def test_loop_header_of_a_mailgate() -> None:
    found = skip(headers={LOOP_HEADER: "x"})
    assert found == Skip("loop", f"{LOOP_HEADER} present (sent by a mailgate)")


@pytest.mark.parametrize(
    "value",
    [
        "help@acme.support.example.test",
        "<support@example.test>",
        "someone@else.test, support@Example.Test",
        "example.test",
    ],
)
def test_x_loop_naming_our_domain(value: str) -> None:
    assert skip(headers={"X-Loop": value}) == Skip("loop", "X-Loop names one of our domains")


@pytest.mark.parametrize("value", ["someone@elsewhere.test", "", "  ", "list@lists.customer.test"])
def test_x_loop_naming_others(value: str) -> None:
    assert reason(headers={"X-Loop": value}) is None


@pytest.mark.parametrize("result", ["fail", "FAIL", "Fail"])
def test_dmarc_fail(result: str) -> None:
    found = skip(dmarc={"result": result, "domain": "customer.test"})
    assert found == Skip("dmarc-fail", "DMARC fail for customer.test")
    assert skip(dmarc={"result": result}) == Skip("dmarc-fail", "DMARC fail for the From domain")


@pytest.mark.parametrize("result", ["pass", "none", "temperror", "", None])
def test_dmarc_other_results(result: Any) -> None:
    assert reason(dmarc={"result": result}) is None


def test_dmarc_fail_can_be_allowed() -> None:
    lenient = Guard(own(), skip_dmarc_fail=False)
    assert lenient.check(env_with(dmarc={"result": "fail"})) is None
    assert Guard(own()).skip_dmarc_fail is True


@pytest.mark.parametrize(
    ("intent", "expected"),
    [
        ("human", None),
        ("", None),
        (None, None),
        (3, None),
        ("out-of-office", Skip("not-human", "intent: out-of-office")),
        ("list", Skip("not-human", "intent: list")),
        ("ticket-system-ack", Skip("not-human", "intent: ticket-system-ack")),
    ],
)
def test_intent(intent: Any, expected: Skip | None) -> None:
    assert skip(intent=intent) == expected


def test_duplicate() -> None:
    assert skip(duplicateOf="msg_7") == Skip("duplicate", "duplicate of msg_7")
    assert skip(duplicateOf="") is None
    assert skip(duplicateOf=None) is None


def test_spam() -> None:
    assert skip(spam={"flagged": True, "score": 15.0}) == Skip(
        "spam", "flagged as spam (score 15.0)"
    )
    assert skip(spam={"flagged": False, "score": 3.0}) is None
    assert skip(spam={"flagged": "true", "score": 9}) is None  # only a real verdict counts
    assert skip(spam=None) is None


def test_the_first_reason_in_rule_order_is_reported() -> None:
    """Every rule fires at once: the reasons come out in the documented order."""
    env = env_with(
        envelope={"mailFrom": "noreply@example.test"},
        headers={
            "Auto-Submitted": "auto-replied",
            "Content-Type": "multipart/report",
            "Precedence": "bulk",
            "List-Id": "<l>",
            "X-Autoreply": "yes",
            "X-Loop": "support@example.test",
        },
        bounce={"recipients": ["x@y.test"]},
        dmarc={"result": "fail"},
        intent="auto-reply",
        duplicateOf="msg_1",
        spam={"flagged": True, "score": 20},
    )
    order = [
        "null-sender",
        "auto-submitted",
        "bounce",
        "precedence",
        "mailing-list",
        "suppress-requested",
        "role-sender",
        "own-address",
        "loop",
        "dmarc-fail",
        "not-human",
        "duplicate",
        "spam",
    ]
    seen: list[str] = []
    # Peel the rules off one at a time, in order, and check which one answers.
    peel: list[tuple[str, Any]] = [
        ("envelope", {"mailFrom": "noreply@example.test"}),
        ("headers.Auto-Submitted", None),
        ("bounce", None),
        ("headers.Content-Type", None),
        ("headers.Precedence", None),
        ("headers.List-Id", None),
        ("headers.X-Autoreply", None),
        ("envelope", {"mailFrom": "agent@example.test"}),
        ("envelope", {"mailFrom": "alice@customer.test"}),
        ("headers.X-Loop", None),
        ("dmarc", None),
        ("intent", "human"),
        ("duplicateOf", None),
        ("spam", None),
    ]
    env["envelope"] = {"mailFrom": ""}
    for key, value in [("start", None), *peel]:
        if key.startswith("headers."):
            env["headers"].pop(key.split(".", 1)[1])
        elif key != "start":
            env[key] = value
        found = Guard(own()).check(env)
        if found is not None and (not seen or seen[-1] != found.reason):
            seen.append(found.reason)
    assert seen == order
    assert Guard(own()).check(env) is None
