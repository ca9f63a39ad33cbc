"""Hostile input: depth, part count, header count, attachment size, and parse never raising."""

from __future__ import annotations

from mailgate.mime.errors import MAX_ERRORS, ErrorLog, limit_errors
from mailgate.mime.limits import Limits
from mailgate.mime.parse import parse_message
from tests.support.mime import assert_valid_envelope


def nested(depth: int) -> bytes:
    head = b"From: a@example.com\r\nSubject: deep\r\nMIME-Version: 1.0\r\n"
    parts = []
    for i in range(depth):
        parts.append(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i))
    body = b"".join(parts) + b"Content-Type: text/plain\r\n\r\ninnermost\r\n"
    body += b"".join(b"--b%d--\r\n" % i for i in reversed(range(depth)))
    return head + body


def codes(env: dict[str, object]) -> set[str]:
    errors = env["parseErrors"]
    assert isinstance(errors, list)
    return {e["code"] for e in errors}


def test_depth_limit() -> None:
    env = parse_message(nested(10), limits=Limits(max_depth=5))
    assert_valid_envelope(env)
    assert "limit.depth" in codes(env)
    assert env["text"] is None
    ok = parse_message(nested(10))
    assert ok["text"] == "innermost"


def test_very_deep_nesting_does_not_raise() -> None:
    env = parse_message(nested(2000))
    assert_valid_envelope(env)
    assert codes(env) & {"limit.depth", "parse.structure"}
    assert env["from"] == {"email": "a@example.com", "name": ""}


def test_part_count_limit() -> None:
    parts = b"".join(
        b"--B\r\nContent-Type: application/octet-stream\r\n\r\nx\r\n" for _ in range(50)
    )
    raw = (
        b"Subject: many\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n" + parts + b"--B--\r\n"
    )
    env = parse_message(raw, limits=Limits(max_parts=10))
    assert_valid_envelope(env)
    assert len(env["attachments"]) == 9  # the container counts as a part
    assert limit_errors(env["parseErrors"]) == ["limit.parts"]


def test_header_limits() -> None:
    raw = b"".join(b"X-H%d: v\r\n" % i for i in range(5000)) + b"Subject: late\r\n\r\nbody"
    env = parse_message(raw, limits=Limits(max_headers=100))
    assert len(env["headers"]) == 3 + 100
    assert env["subject"] is None  # past the limit: not read
    assert "limit.headers" in codes(env)
    huge = b"Subject: " + b"x" * 100_000 + b"\r\nX-After: 1\r\n\r\nbody"
    env = parse_message(huge, limits=Limits(max_header_bytes=50_000))
    assert "X-After" not in env["headers"]
    assert "limit.headers" in codes(env)


def test_attachment_size_limit_lists_but_does_not_store() -> None:
    stored: list[bytes] = []

    def sink(data: bytes) -> str:
        stored.append(data)
        return "0" * 64

    raw = (
        b"Subject: big\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
        b"--B\r\nContent-Type: application/octet-stream\r\n\r\n" + b"y" * 5000 + b"\r\n--B--\r\n"
    )
    env = parse_message(raw, blob_sink=sink, limits=Limits(max_attachment_bytes=1000))
    assert stored == []
    (att,) = env["attachments"]
    assert att["size"] == 5000
    assert "limit.attachment-size" in codes(env)


def test_text_limit() -> None:
    raw = b"Subject: long\r\n\r\n" + b"word " * 10_000
    env = parse_message(raw, limits=Limits(max_text_chars=1000))
    assert len(env["text"]) == 1000
    assert "limit.text" in codes(env)


def test_error_log_is_bounded() -> None:
    log = ErrorLog()
    for i in range(MAX_ERRORS * 3):
        log.add("x.y", str(i))
        log.add("x.y", str(i))  # exact repeats are dropped
    assert len(log.items) == MAX_ERRORS + 1
    assert log.items[-1]["code"] == "limit.errors"


def test_garbage_inputs_never_raise() -> None:
    for raw in (b"", b"\r\n", b"\xff" * 100, b":", b"Subject", b"\r\n\r\n\r\n", b"From \r\n",
                b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n--\r\n",
                b"Content-Type: message/rfc822\r\n\r\nFrom: x\r\n",
                b"Content-Transfer-Encoding: base64\r\n\r\n====",
                bytes(range(256)) * 10):  # fmt: skip
        assert_valid_envelope(parse_message(raw))


def test_html_size_and_depth_limits_keep_text() -> None:
    big = b"Content-Type: text/html\r\n\r\n<p>" + b"word " * 2000 + b"</p>"
    env = parse_message(big, limits=Limits(max_html_chars=1000))
    assert env["html"] is None
    assert env["text"].startswith("word word")
    assert "limit.html-size" in codes(env)
    deep = b"Content-Type: text/html\r\n\r\n" + b"<div><span>" * 1000 + b"deep text"
    env = parse_message(deep)
    assert_valid_envelope(env)
    assert env["html"] is None
    assert env["text"] == "deep text"
    assert "limit.html-depth" in codes(env)


def test_pathological_markup_and_headers_finish() -> None:
    # Each of these was quadratic in a naive implementation (regex rescans, html.parser).
    n = 100_000
    for raw in (
        b"Content-Type: text/html\r\n\r\n" + b"<script>" * (n // 8),
        b"Content-Type: text/html\r\n\r\n" + b"<!--[if x]>" * (n // 11),
        b"Content-Type: text/html\r\n\r\n" + b"<a" * (n // 2),
        b"To: " + b'"' * n + b"\r\n\r\nx",
        b"To: " + b"a:" * (n // 2) + b"\r\n\r\nx",
        b"Subject: " + b"=?utf-8?q?" * (n // 10) + b"\r\n\r\nx",
    ):
        assert_valid_envelope(parse_message(raw))
