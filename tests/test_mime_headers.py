"""Charset labels, byte decoding, RFC 2047 words, header splitting, addresses, dates, ids."""

from __future__ import annotations

import base64

import pytest

from mailgate.mime.addresses import parse_address_list
from mailgate.mime.charsets import codec_for, decode_8bit_header, decode_bytes, scrub
from mailgate.mime.errors import ErrorLog
from mailgate.mime.fields import first_msg_id, msg_ids, parse_date
from mailgate.mime.headers import decode_words, headers_object, split_header_block
from mailgate.mime.limits import Limits
from mailgate.mime.params import parse_structured


@pytest.mark.parametrize(
    ("label", "codec"),
    [
        ("ks_c_5601-1987", "cp949"),
        ("UTF8", "utf-8"),
        ('"utf-8"', "utf-8"),
        ("iso-8859-8-i", "iso8859-8"),
        ("gb2312", "gb18030"),
        ("x-unknown", None),
        ("unknown-8bit", None),
        ("no-such-charset", None),
        ("base64", None),  # a transform codec is not a charset
        ("utf-8*en", "utf-8"),  # RFC 2231 language suffix
        ("iso-8859-1", "cp1252"),
        ("shift_jis", "cp932"),
    ],
)
def test_codec_for(label: str, codec: str | None) -> None:
    assert codec_for(label) == codec


def test_decode_bytes_fallbacks() -> None:
    assert decode_bytes("€uro".encode("cp1252"), None) == ("€uro", True)
    assert decode_bytes("ünï".encode(), "us-ascii") == ("ünï", True)
    assert decode_bytes("中文".encode("gbk"), "gb2312") == ("中文", True)
    text, clean = decode_bytes("café".encode("latin-1"), "utf-8")  # mislabelled latin-1
    assert text == "café" and not clean
    text, clean = decode_bytes("Grüße ".encode() + b"\xff", "utf-8")  # UTF-8, one bad byte
    assert text == "Grüße \ufffd" and not clean
    text, clean = decode_bytes(b"\x82\xa0\x82", "shift_jis")  # truncated multi-byte sequence
    assert text.startswith("あ") and "\ufffd" in text and not clean
    assert decode_bytes("日本語".encode("iso-2022-jp"), "ISO-2022-JP") == ("日本語", True)
    assert decode_bytes("①".encode("cp932"), "shift_jis") == ("①", True)  # NEC extension
    text, clean = decode_bytes(b"\x81\x8d", None)  # undefined in cp1252 -> latin-1 controls
    assert text == "\x81\x8d"
    assert decode_bytes(b"+AOk-t+AOk-", "utf-7")[0] == "été"
    assert decode_bytes("hi".encode("utf-16"), "utf-16")[0] == "hi"
    assert decode_bytes(b"a\x00b", None)[0] == "ab"


def test_8bit_headers_and_scrub() -> None:
    assert decode_8bit_header("Jürgen".encode()) == "Jürgen"
    assert decode_8bit_header("Jürgen".encode("latin-1")) == "Jürgen"
    # UTF-8 name cut in the middle of a character: still UTF-8, one U+FFFD
    assert decode_8bit_header("Картинка".encode()[:-1]) == "Картинк\ufffd"
    assert scrub("a\udcfcb") == "a\ufffdb"


def b64word(text: str, charset: str = "utf-8") -> bytes:
    return b"=?" + charset.encode() + b"?B?" + base64.b64encode(text.encode(charset)) + b"?="


def test_encoded_words() -> None:
    assert decode_words(b"=?iso-8859-1?Q?Caf=E9_au_lait?=") == "Café au lait"
    assert decode_words(b"=?UTF-8?b?" + base64.b64encode("ü".encode())[:-1] + b"?=") == "ü"
    assert decode_words(b"a " + b64word("x") + b"  " + b64word("y") + b" b") == "a xy b"
    # RFC 2047 section 6.2: white space between words disappears, not elsewhere
    assert decode_words(b64word("x") + b" plain " + b64word("y")) == "x plain y"
    # raw 8-bit inside an encoded word decodes with the word's charset
    assert decode_words(b"=?iso-8859-1?Q?Fr\xf6sche?=") == "Frösche"
    errors = ErrorLog()
    assert decode_words(b"=?bogus?Q?abc?= =?utf-8?B?###?=", errors) == "abc =?utf-8?B?###?="
    assert errors.items
    assert (
        decode_words(b"=?ks_c_5601-1987?B?" + base64.b64encode("한국".encode("cp949")) + b"?=")
        == "한국"
    )


def test_split_header_block_obsolete_and_limits() -> None:
    raw = b"From x\nSubject : obs\r\n  cont\r\nX-A: 1\r\n\r\nbody"
    errors = ErrorLog()
    fields, start = split_header_block(raw, Limits(), errors)
    assert fields == [("Subject", b" obs\r\n  cont\r\n"), ("X-A", b" 1\r\n")]
    assert raw[start:] == b"body"
    many = b"".join(b"X-%d: v\r\n" % i for i in range(50)) + b"\r\nbody"
    errors = ErrorLog()
    fields, start = split_header_block(many, Limits(max_headers=10), errors)
    assert len(fields) == 10 and many[start:] == b"body"
    assert [e["code"] for e in errors.items] == ["limit.headers"]


def test_headers_object_shape() -> None:
    fields = [
        ("Received", b" a\r\n"),
        ("Subject", b" =?utf-8?Q?h=C3=A9?=\r\n"),
        ("RECEIVED", b" b"),
    ]
    obj = headers_object(fields, ErrorLog())
    assert obj == {
        "Message-ID": None,
        "In-Reply-To": None,
        "References": None,
        "Received": ["a", "b"],
        "Subject": "hé",
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b'"Doe, John" <j@x.test>', [("j@x.test", "Doe, John")]),
        (b"support@yourco.com <evil@x.test>", [("evil@x.test", "support@yourco.com")]),
        (b"bbb@ddd.com (John X. Doe)", [("bbb@ddd.com", "John X. Doe")]),
        (b"A: a@x, b@y;, c@z", [("a@x", ""), ("b@y", ""), ("c@z", "")]),
        (b"undisclosed-recipients:;", []),
        (b"<@route.a,@route.b:real@x.test>", [("real@x.test", "")]),
        (b"Joe Bloggs joe@x.test", [("joe@x.test", "Joe Bloggs")]),
        (b"a@x.test,, ,b@y.test", [("a@x.test", ""), ("b@y.test", "")]),
        (b"=?utf-8?Q?Doe=2C_Jane?= <jd@x.test>", [("jd@x.test", "Doe, Jane")]),
        ("Ünï <jörg@bücher.example>".encode(), [("jörg@bücher.example", "Ünï")]),
        (b"Name <mailto:n@x.test>", [("n@x.test", "Name")]),
        (b'"quoted \\"inner\\"" <q@x.test>', [("q@x.test", 'quoted "inner"')]),
        (b"(nested (comment)) c@x.test", [("c@x.test", "nested (comment)")]),
        (b"Missing <gt@x.test", [("gt@x.test", "Missing")]),
    ],
)
def test_address_list(value: bytes, expected: list[tuple[str, str]]) -> None:
    got = [(a["email"], a["name"]) for a in parse_address_list([value], ErrorLog())]
    assert got == expected


def test_address_list_limit() -> None:
    value = b", ".join(b"u%d@x.test" % i for i in range(50))
    errors = ErrorLog()
    assert len(parse_address_list([value], errors, limit=10)) == 10
    assert errors.items[0]["code"] == "limit.addresses"


def test_dates() -> None:
    assert parse_date("Thu, 23 Apr 2026 10:31:58 +0200") == "2026-04-23T08:31:58Z"
    assert parse_date("23 Apr 2026 10:31:60 GMT") == "2026-04-23T10:31:59Z"  # leap second
    assert parse_date("Thu, 23 Apr 26 10:31 -0000") == "2026-04-23T10:31:00Z"  # 2-digit year
    assert parse_date("garbage") is None
    assert parse_date("Thu, 31 Feb 2026 10:00:00 +0000") is None


def test_message_ids() -> None:
    assert msg_ids("<a@x> <b@y>\r\n <c@z>") == ["<a@x>", "<b@y>", "<c@z>"]
    assert msg_ids("bare@x.test") == ["<bare@x.test>"]
    assert first_msg_id("<p@x> (comment <q@y>)") == "<p@x>"
    assert first_msg_id("") is None


def test_structured_params() -> None:
    assert parse_structured('Multipart/Mixed; boundary="a b"; x=1') == (
        "multipart/mixed",
        {"boundary": "a b", "x": "1"},
    )
    assert parse_structured("attachment; filename*=UTF-8''na%C3%AFve.txt")[1] == {
        "filename": "naïve.txt"
    }
    value = "attachment; filename*0*=iso-8859-1''%E9t; filename*1*=%E9; filename*2=.txt"
    assert parse_structured(value)[1]["filename"] == "été.txt"
    assert parse_structured('inline; filename="=?utf-8?B?w6kudHh0?="')[1]["filename"] == "é.txt"
    assert parse_structured("text/plain;; charset=utf-8")[1] == {"charset": "utf-8"}


def test_windows_iso_2022_jp() -> None:
    # "①㈱髙" as Outlook writes ISO-2022-JP (CP50220): NEC row 13 and IBM extension kanji.
    jis = b"\x1b$B-!-j|b\x1b(B"
    assert decode_bytes(b"Subject line " + jis, "iso-2022-jp") == ("Subject line ①㈱髙", True)
    word = b"=?ISO-2022-JP?B?" + base64.b64encode(jis) + b"?="
    errors = ErrorLog()
    assert decode_words(word, errors) == "①㈱髙"
    assert errors.items == []


def test_mislabelled_utf8_encoded_word() -> None:
    assert decode_words(b"=?utf-8?Q?caf=E9?=") == "café"
