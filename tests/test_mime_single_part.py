"""The single-part fast path of the MIME tree (headers parsed, body taken whole) gives the
same message as feeding everything through the stdlib parser, for any single-part input."""

from __future__ import annotations

from email.feedparser import BytesFeedParser
from email.policy import compat32

from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.mime.errors import ErrorLog
from mailgate.mime.headers import split_header_block
from mailgate.mime.limits import DEFAULT_LIMITS
from mailgate.mime.structure import LeafMessage, parse_tree, structure_head

CTYPES = [
    None,
    "text/plain; charset=utf-8",
    "text/html",
    "message/rfc822",
    "message/delivery-status",
    "application/octet-stream; name=x.bin",
    "text",  # invalid: the stdlib reads text/plain
    "multipart/mixed",  # multipart without a boundary: the slow path, same answer
    "multipart/mixed; boundary=b",
]
BODY = st.lists(
    st.sampled_from(
        [b"line", b"\r\n", b"\n", b"\r", b"--b", b"--b--", b"\xff\xfe", b"From: x", b" ", b"\x00"]
    ),
    max_size=30,
).map(b"".join)


def slow(raw: bytes) -> LeafMessage:
    errors = ErrorLog()
    fields, body_start = split_header_block(raw, DEFAULT_LIMITS, errors)
    parser = BytesFeedParser(_factory=LeafMessage, policy=compat32)
    parser.feed(structure_head(fields))
    parser.feed(raw[body_start:])
    msg: LeafMessage = parser.close()  # type: ignore[assignment]
    return msg


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(CTYPES), st.sampled_from(["7bit", "base64", None]), BODY)
def test_fast_path_equals_the_stdlib_parse(ctype: str | None, cte: str | None, body: bytes) -> None:
    head = b"From: a@example.test\r\nSubject: s\r\n"
    if ctype:
        head += b"Content-Type: " + ctype.encode() + b"\r\n"
    if cte:
        head += b"Content-Transfer-Encoding: " + cte.encode() + b"\r\n"
    raw = head + b"\r\n" + body
    errors = ErrorLog()
    fields, body_start = split_header_block(raw, DEFAULT_LIMITS, errors)
    fast = parse_tree(fields, raw, body_start, errors)
    ref = slow(raw)
    assert fast is not None
    assert fast.get_content_type() == ref.get_content_type()
    assert fast.is_multipart() == ref.is_multipart()
    if not ref.is_multipart():
        assert fast.get_payload() == ref.get_payload()
        assert fast.get_payload(decode=True) == ref.get_payload(decode=True)
    assert [type(d) for d in fast.defects] == [type(d) for d in ref.defects]
    assert fast.items() == ref.items()
