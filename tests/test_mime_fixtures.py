"""Each ``fixtures/mime/<case>.eml`` parses to its pinned ``<case>.json`` and to a valid envelope,
plus explicit checks of the behaviour each fixture exists for."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mailgate.mime.parse import parse_message
from tests.support.mime import FIXTURES, assert_valid_envelope, expected, fixture, summary

CASES = sorted(p.stem for p in FIXTURES.glob("*.eml"))


@pytest.mark.parametrize("case", CASES)
def test_fixture_matches_pinned_envelope(case: str) -> None:
    env = parse_message(fixture(f"{case}.eml"))
    assert_valid_envelope(env)
    assert summary(env) == expected(f"{case}.json")


def test_every_fixture_has_expected_json() -> None:
    assert CASES
    missing = [c for c in CASES if not (FIXTURES / f"{c}.json").exists()]
    assert missing == []


def test_encoded_words_in_aliased_charsets() -> None:
    env = parse_message(fixture("encoded_words.eml"))
    assert env["from"] == {"email": "kim@example.kr", "name": "안녕하세요"}  # ks_c_5601-1987
    assert env["to"][0]["name"] == "שלום"  # iso-8859-8-i
    assert env["cc"][0]["name"] == "Café Owner"  # x-unknown: UTF-8 guess
    # utf8 alias + iso-2022-jp word on a folded line, joined without the folding space
    assert env["subject"] == "Grüße aus Köln日本語の件名です"
    # a UTF-8 character split across two encoded words survives
    assert env["headers"]["X-Split"] == "Grüße"
    assert env["date"] == "2026-04-23T08:31:58Z"
    assert "header.encoded-word" in {e["code"] for e in env["parseErrors"]}


def test_rfc2231_filenames() -> None:
    names = [a["filename"] for a in parse_message(fixture("rfc2231.eml"))["attachments"]]
    assert names == ["Übersicht März.pdf", "café.txt", "отчёт.xlsx"]


def test_body_charset_fallbacks() -> None:
    text = parse_message(fixture("charsets.eml"))["text"]
    assert "déclaré us-ascii mais UTF-8 ✓" in text  # declared us-ascii, really UTF-8
    assert "cp1252 – “quotes” €" in text  # no charset, 8-bit: cp1252
    assert "镕铭：这是GBK专有字符测试" in text  # gb2312 label on GBK-only characters
    assert "Привет" in text  # koi8-r quoted-printable
    assert "really latin-1: Grüße aus Köln" in text  # declared utf-8, not UTF-8 at all


def test_damaged_base64_is_recovered() -> None:
    env = parse_message(fixture("base64_damaged.eml"))
    assert env["text"] == "Hallo Welt – base64 text"
    (att,) = env["attachments"]
    assert att["size"] == 1024 + 23  # the junk line decodes to a few stray bytes, never raises
    assert "body.transfer-encoding" in {e["code"] for e in env["parseErrors"]}


def test_nested_structure_inline_image_and_attachment() -> None:
    env = parse_message(fixture("nested.eml"))
    assert env["text"] == "Hello plain"
    assert 'src="cid:logo@x"' in env["html"]
    image, pdf = env["attachments"]
    assert (image["disposition"], image["contentId"], image["contentType"]) == (
        "inline",
        "logo@x",
        "image/png",
    )
    assert image["filename"] == "attachment-1.png"
    assert (pdf["filename"], pdf["disposition"], pdf["detectedType"]) == (
        "invoice.pdf",
        "attachment",
        "application/pdf",
    )
    assert pdf["sha256"] == hashlib.sha256(b"%PDF-1.7\n1 0 obj\n").hexdigest()


def test_forward_and_calendar() -> None:
    env = parse_message(fixture("forward_calendar.eml"))
    assert env["forwarded"] == [
        {
            "subject": "Commande n°42 abîmée",
            "from": {"email": "renee@example.fr", "name": "Renée"},
            "date": "2026-04-22T13:00:00Z",
            "messageId": "<orig@example.fr>",
        }
    ]
    eml, ics = env["attachments"]
    assert eml["contentType"] == "message/rfc822" and eml["filename"].endswith(".eml")
    assert ics["contentType"] == "text/calendar" and ics["filename"].endswith(".ics")
    assert env["text"] == "See the customer's mail below."


def test_bounce_dsn() -> None:
    bounce = parse_message(fixture("bounce_dsn.eml"))["bounce"]
    assert bounce["status"] == "5.1.1"
    assert bounce["action"] == "failed"
    assert bounce["kind"] == "permanent"
    assert bounce["originalRecipient"] == "Customer@Example.org"
    assert bounce["finalRecipient"] == "customer@example.org"
    assert "User unknown" in bounce["diagnostic"]


def test_winmail_dat_is_unpacked() -> None:
    env = parse_message(fixture("winmail.eml"))
    files = {a["filename"]: a for a in env["attachments"]}
    assert set(files) == {"minutes.txt", "budget.csv"}
    assert files["minutes.txt"]["sha256"] == hashlib.sha256(b"Meeting minutes\n").hexdigest()


def test_broken_structure_keeps_what_is_readable() -> None:
    env = parse_message(fixture("broken_structure.eml"))
    assert env["text"].startswith("Part without any Content-Type")  # preamble is not the body
    assert [a["filename"] for a in env["attachments"]] == ["data.bin"]
    assert "defect.CloseBoundaryNotFoundDefect" in {e["code"] for e in env["parseErrors"]}


def test_address_decisions() -> None:
    env = parse_message(fixture("addresses.eml"))
    # display-name spoofing: the address is the angle-addr, never the display-name text
    assert env["from"] == {"email": "evil@attacker.test", "name": "support@yourco.com"}
    emails = [a["email"] for a in env["to"]]
    # group flattened, quoted comma kept in the name, comment-style name, repeated To merged
    assert emails == ["ann@example.com", "john@example.com", "bbb@ddd.com", "francois@example.fr"]
    assert env["to"][1]["name"] == "Doe, John"
    assert env["to"][2]["name"] == "John X. Doe"
    assert env["cc"][0] == {"email": "jörg@bücher.example", "name": "Ünïcode Nämé"}  # SMTPUTF8
    assert {"email": "x@y.test", "name": "Unclosed"} in env["cc"]  # unterminated quote
    assert env["replyTo"] == [{"email": "noone", "name": ""}]  # bare local part kept
    assert env["messageId"] == "<mid-without-brackets@example.test>"
    assert env["inReplyTo"] == "<parent@example.test>"
    assert env["references"] == ["<a@x.test>", "<b@x.test>", "<parent@example.test>"]
    assert env["bcc"] == [{"email": "hidden@example.com", "name": ""}]


def test_raw_8bit_headers_and_repeats() -> None:
    env = parse_message(fixture("raw8bit_headers.eml"))
    assert env["from"]["name"] == "Jürgen Müller"  # latin-1 bytes
    assert env["to"][0]["name"] == "王小明"  # UTF-8 bytes
    assert env["subject"] == "Grüße aus Köln"
    assert len(env["headers"]["Received"]) == 3
    assert env["headers"]["X-Custom"] == ["one", "two"]  # case-insensitive repeat, first name
    assert env["headers"]["Message-ID"] is None
    assert env["date"] is None
    assert "header.date" in {e["code"] for e in env["parseErrors"]}


@pytest.mark.parametrize(
    ("case", "reply"),
    [
        ("reply_gmail.eml", "Thanks, that fixed it!"),
        ("reply_outlook.eml", "The invoice number is 4721."),
    ],
)
def test_reply_text_strips_quotes_and_signature(case: str, reply: str) -> None:
    assert parse_message(fixture(case))["replyText"] == reply


def test_format_flowed_is_joined() -> None:
    text = parse_message(fixture("flowed.eml"))["text"]
    assert text.startswith("This is a long line that was soft-broken by the sender.\n")
    assert "\nSpace-stuffed From line." in text


def test_hostile_html_is_sanitized_and_text_derived() -> None:
    env = parse_message(fixture("html_only.eml"))
    html = env["html"]
    for bad in ("<script", "alert(", "<style", "<iframe", "<object", "<embed", "<form", "<input",
                "onload", "onclick", "javascript:", "vbscript:", "data:text", "svg+xml"):  # fmt: skip
        assert bad not in html.lower(), bad
    assert 'src="cid:img1@x"' in html
    assert 'src="data:image/png;base64,' in html
    assert 'href="https://example.com/x"' in html
    assert env["text"].startswith("Order #4721\n\nHello click ok")
    assert "- one\n- two" in env["text"]
    assert "alert" not in env["text"] and "color:red" not in env["text"]


def test_unparseable_input_still_gives_an_envelope(tmp_path: Path) -> None:
    env = parse_message(fixture("not_mime.eml"))
    assert_valid_envelope(env)
    assert env["parseErrors"]
    assert "\x00" not in env["text"]
    empty = parse_message(b"")
    assert_valid_envelope(empty)
    assert empty["headers"] == {"Message-ID": None, "In-Reply-To": None, "References": None}


def test_plain_text_bounce_is_recognized() -> None:
    bounce = parse_message(fixture("bounce_plain.eml"))["bounce"]
    assert bounce is not None and bounce["heuristic"] is True
    assert (bounce["status"], bounce["kind"], bounce["originalRecipient"]) == (
        "5.1.1",
        "permanent",
        "gone@example.org",
    )


def test_ordinary_mail_is_not_a_bounce() -> None:
    for case in ("reply_gmail.eml", "nested.eml", "forward_calendar.eml"):
        assert parse_message(fixture(case))["bounce"] is None


def test_winmail_dat_with_only_a_body() -> None:
    env = parse_message(fixture("winmail_body_only.eml"))
    assert env["text"] == "Rich-text body from Outlook: Grüße\n"
    assert env["attachments"] == []


def test_html_meta_charset_and_bom() -> None:
    html = '<html><head><meta http-equiv="Content-Type" content="text/html; charset=windows-1251">'
    raw = (
        b"From: a@example.com\r\nReferences: <a@x> <b@x>\r\nReferences: <a@x>\r\n"
        b"Content-Type: text/html\r\n\r\n"
        + html.encode()
        + "</head><body><p>Привет</p></body></html>".encode("cp1251")
    )
    env = parse_message(raw)
    assert env["text"] == "Привет"
    assert env["references"] == ["<a@x>", "<b@x>"]
    bom = b"Content-Type: text/plain; charset=utf-8\r\n\r\n\xef\xbb\xbfhello"
    assert parse_message(bom)["text"] == "hello"


def test_empty_plain_alternative_falls_back_to_html() -> None:
    raw = (
        b"Content-Type: multipart/alternative; boundary=A\r\n\r\n--A\r\nContent-Type: text/plain"
        b"\r\n\r\n \r\n--A\r\nContent-Type: text/html\r\n\r\n<p>Real content</p>\r\n--A--\r\n"
    )
    assert parse_message(raw)["text"] == "Real content"
