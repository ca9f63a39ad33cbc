"""Inline forwards in the styles of Gmail, Outlook, Apple Mail, Thunderbird and Yahoo, in several
languages; the effective customer; the ``customer`` rule matcher."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.mime.forwards import effective_customer, inline_forwards, is_forward_subject
from mailgate.mime.parse import parse_message
from mailgate.pipeline.offline import run_file
from tests.support.mime import assert_valid_envelope
from tests.support.pipeline import make_config

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "forwards"

# fixture: (style, original sender, subject, ISO date or None, first words of the text, customer)
CASES: dict[str, tuple[str, str, str, str | None, str, str | None]] = {
    "gmail-en.eml": ("gmail", "jane@customer.test", "Refund for order 5521",
                     "2026-04-23T10:32:00", "Hello, I was charged twice", "jane@customer.test"),
    "gmail-de.eml": ("gmail", "max@kunde.test", "Rechnung 2026-114 falsch", None,
                     "Guten Tag, die Rechnung", "max@kunde.test"),
    "outlook-en.eml": ("outlook", "omar@acme-corp.test", "Cannot log in since Monday",
                       "2026-04-23T09:15:00Z", "Hi Pat, I cannot log in", "omar@acme-corp.test"),
    "outlook-fr.eml": ("outlook", "louis.martin@client.test", "Commande 7781 non reçue", None,
                       "Bonjour, je n'ai toujours", "louis.martin@client.test"),
    "outlook-es.eml": ("outlook", "carlos@cliente.test", "Factura duplicada", None,
                       "Hola, me han cobrado", "carlos@cliente.test"),
    "outlook-it.eml": ("outlook", "marco@cliente.test", "Reso articolo 4410", None,
                       "Buongiorno, vorrei", "marco@cliente.test"),
    "outlook-nl.eml": ("outlook", "pieter@klant.test", "Levering te laat", None,
                       "Goedemiddag, mijn levering", "pieter@klant.test"),
    "apple-en.eml": ("apple", "kim@customer.test", "Broken charger", "2026-04-23T09:02:11",
                     "The charger I bought", "kim@customer.test"),
    "apple-de.eml": ("apple", "erika@kundin.test", "Kündigung", None,
                     "Hiermit kündige ich", "erika@kundin.test"),
    "thunderbird-en.eml": ("thunderbird", "devops@partner.test", "API returns 500",
                           "2026-04-23T13:45:00Z", "Since this morning", "devops@partner.test"),
    "yahoo-en.eml": ("yahoo", "taylor@customer.test", "Wrong size delivered",
                     "2026-04-23T10:10:10Z", "I ordered size M", "taylor@customer.test"),
    "customer-forwards-third-party.eml": ("gmail", "tracking@courier.test",
                                          "Your parcel could not be delivered",
                                          "2026-04-23T20:00:00", "We tried to deliver", None),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_inline_forward_styles(name: str) -> None:
    style, sender, subject, date, words, customer = CASES[name]
    env = parse_message((FIXTURES / name).read_bytes())
    [fwd] = env["forwarded"]
    assert (fwd["style"], fwd["from"]["email"], fwd["subject"], fwd["date"]) == (
        style,
        sender,
        subject,
        date,
    )
    assert fwd["text"].startswith(words) and fwd["inline"] is True and fwd["messageId"] is None
    assert (env["customer"] or {}).get("email") == customer
    assert not any(e["code"].startswith("forward") for e in env["parseErrors"])


def test_nested_forwards_customer_is_the_first_outsider() -> None:
    env = parse_message((FIXTURES / "gmail-pt-nested.eml").read_bytes())
    assert [f["from"]["email"] for f in env["forwarded"]] == [
        "joao@example.test",
        "rita@cliente.test",
    ]
    assert env["forwarded"][0]["text"] == "" and env["forwarded"][0]["dateText"].startswith("qui")
    assert env["forwarded"][1]["date"] == "2026-04-23T15:00:00Z"
    assert env["customer"] == {"name": "Rita Costa", "email": "rita@cliente.test"}


def test_an_outlook_reply_is_not_a_forward() -> None:
    env = parse_message((FIXTURES / "outlook-reply-not-forward.eml").read_bytes())
    assert env["forwarded"] is None and env["customer"] is None


def test_attached_forward_is_kept_and_comes_first() -> None:
    inner = (FIXTURES / "gmail-en.eml").read_bytes()
    raw = (
        b"From: Agent <agent@example.test>\r\nTo: support@example.test\r\nSubject: FW: mail\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b"--b\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--b--\r\n"
    )
    env = parse_message(raw)
    [attached] = env["forwarded"]
    assert attached["from"]["email"] == "agent@example.test" and "inline" not in attached
    assert attached["messageId"] == "<fwd-gmail-en@example.test>"
    assert env["customer"] is None  # the attached forward's sender is a colleague too


@pytest.mark.parametrize(
    ("subject", "forward"),
    [
        ("Fwd: x", True),
        ("FW: x", True),
        ("WG: x", True),
        ("TR : x", True),
        ("RV: x", True),
        ("I: x", True),
        ("Doorst: x", True),
        ("Enc: x", True),
        ("Re: Fwd: x", True),
        ("Re: x", False),
        ("Information: x", False),
        ("Forward planning", False),
        ("", False),
        (None, False),
    ],
)
def test_forward_subjects(subject: str | None, forward: bool) -> None:
    assert is_forward_subject(subject) is forward


def test_outlook_block_needs_a_forward_subject_and_two_fields() -> None:
    block = "Hi\n\nFrom: Kim <kim@c.test>\nSent: Monday\nSubject: x\n\nbody"
    assert inline_forwards(block, "Re: x") == []
    assert inline_forwards(block, "FW: x")[0]["from"]["email"] == "kim@c.test"
    assert inline_forwards("From: Kim <kim@c.test>\n\nbody", "FW: x") == []
    # an explicit marker needs only From
    marked = "-------- Forwarded Message --------\nFrom: kim@c.test\n\nbody"
    assert inline_forwards(marked)[0]["text"] == "body"
    assert inline_forwards("---------- Forwarded message ---------\nno headers") == []
    assert inline_forwards(None) == [] and inline_forwards("") == []


def test_outlook_mailto_form_and_folded_values() -> None:
    text = (
        "-----Original Message-----\nFrom: Kim Lee [mailto:kim@c.test]\nSent: 23.04.2026 10:05\n"
        "Subject: a long\n subject line\n\nbody"
    )
    [fwd] = inline_forwards(text, "FW: a long subject line")
    assert fwd["from"] == {"name": "Kim Lee", "email": "kim@c.test"}
    assert fwd["subject"] == "a long subject line" and fwd["date"] == "2026-04-23T10:05:00"


def test_effective_customer_rules() -> None:
    fwd = [{"from": {"email": "kim@customer.test", "name": "Kim"}}]
    agent = {"email": "agent@example.test", "name": "A"}
    support = [{"email": "support@help.example.test", "name": ""}]
    assert effective_customer(agent, support, fwd) == fwd[0]["from"]
    # the forwarder is not one of us: they are the customer themselves
    outsider = {"email": "x@elsewhere.test", "name": ""}
    assert effective_customer(outsider, support, fwd) is None
    # a forward of a colleague's own mail names no customer
    inside = [{"from": {"email": "boss@example.test", "name": ""}}, {"from": None}]
    assert effective_customer(agent, support, inside) is None
    assert effective_customer(None, support, fwd) is None
    assert effective_customer(agent, [], fwd) is None


async def test_customer_rule_matcher_and_schema(tmp_path: Path) -> None:
    rules = [
        {"name": "acme", "if": {"customer": "@acme-corp.test"}, "then": {"queue": "acme"}},
        {"name": "jane", "if": {"customer": "jane@customer.test"}, "then": {"queue": "jane"}},
    ]
    cfg = make_config(rules)
    forwarded, _ = await run_file((FIXTURES / "outlook-en.eml").read_bytes(), cfg)
    assert forwarded["queue"] == "acme" and forwarded["intent"] == "human"
    direct, _ = await run_file((FIXTURES / "outlook-reply-not-forward.eml").read_bytes(), cfg)
    assert direct["queue"] == "jane"  # no forward: the customer is From
    for env in (forwarded, direct):
        assert_valid_envelope(env)


# The marker scan skips a pattern when its required literal is absent; it must find exactly
# what the patterns find on their own.
_PHRASES = [
    "---------- Forwarded message ---------",
    "-----Original Message-----",
    "----- Weitergeleitete Nachricht -----",
    "Begin forwarded message:",
    "BEGIN FORWARDED MESSAGE:",
    "Anfang der weitergeleiteten E-Mail:",
    "Début du message réexpédié :",
    "DÉBUT DU MESSAGE TRANSFÉRÉ:",
    "Inicio del mensaje reenviado:",
    "Inizio messaggio inoltrato:",
    "Begin doorgestuurd bericht:",
    "Início da mensagem reencaminhada:",
    "Começo da mensagem encaminhada:",
    "From: Alice <alice@example.org>",
    "> hello",
    "-- ",
    "",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_PHRASES), max_size=12), st.booleans())
def test_marker_prefilter_finds_what_the_patterns_find(lines: list[str], fwd: bool) -> None:
    from mailgate.mime import forwards as f

    text = "\n".join(lines)
    expected = [(m.start(), m.end()) for m in f._DASHED.finditer(text)]
    expected += [(m.start(), m.end()) for m in f._APPLE.finditer(text)]
    got = {(start, end) for start, end, _style in f._markers(text, fwd)}
    original = {(s, e) for s, e in expected if "original" in text[s:e].lower()}
    assert {pair for pair in expected if fwd or pair not in original} <= got
