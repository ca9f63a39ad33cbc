"""Raw message bytes to the envelope's parsing fields. Never raises.

How: the top-level header block is read from bytes by ``headers.py`` (only the fields the
envelope needs are decoded: From, Reply-To, To, Cc, Bcc, Subject, Date, Message-ID, In-Reply-To,
References, plus the ``headers`` object); the MIME structure is parsed by the stdlib's
``BytesFeedParser`` with ``compat32`` (fed only the Content-* fields and the body, so it does not
re-parse Received & co.) and walked by ``structure.py``. ``policy.default``'s header registry is
not used: it is ~9x slower on small mail, surrogate-escapes raw 8-bit header bytes, and returns
the display-name text as the address for ``support@yourco.com <evil@x.test>``.

It does not set id/timestamp/envelope/auth/pipeline fields; the ingest worker does.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
from collections.abc import Callable
from email.message import Message
from typing import Any

from mailgate.envelope import Address, Envelope
from mailgate.mime.addresses import parse_address_list
from mailgate.mime.attachments import BlobSink, BlobSinkError
from mailgate.mime.bounce import guess_bounce
from mailgate.mime.calendar import find_calendar
from mailgate.mime.charsets import decode_bytes, scrub
from mailgate.mime.errors import ErrorLog
from mailgate.mime.fields import first_msg_id, msg_ids, parse_date
from mailgate.mime.forwards import add_forwards
from mailgate.mime.headers import (
    HeaderSet,
    decode_words,
    headers_object,
    split_header_block,
)
from mailgate.mime.html import MAX_HTML_DEPTH, RemoteImages, html_to_text, sanitize_html
from mailgate.mime.limits import DEFAULT_LIMITS, Limits
from mailgate.mime.structure import Collected, Walker, parse_tree
from mailgate.mime.text import normalize_newlines, reply_text
from mailgate.mime.transfer import children

__all__ = ["BlobSink", "BlobSinkError", "configured_parser", "parse_message"]

log = logging.getLogger("mailgate.mime")

_MAX_REFERENCES = 500


def _collect_defects(msg: Message, errors: ErrorLog, limit: int) -> None:
    stack: list[Message] = [msg]
    seen = 0
    while stack and seen < limit:
        part = stack.pop()
        seen += 1
        for defect in getattr(part, "defects", ()):
            name = type(defect).__name__
            errors.add(f"defect.{name}", str(defect.__doc__ or name).strip().split("\n")[0])
        stack.extend(children(part) or ())


def _addresses(hs: HeaderSet, name: str, errors: ErrorLog, limits: Limits) -> list[Address]:
    return parse_address_list(hs.all(name), errors, limits.max_addresses)


def _cap(text: str, limit: int, what: str, errors: ErrorLog) -> str:
    if len(text) > limit:
        errors.add(f"limit.{what}", f"{what} cut at {limit} characters")
        return text[:limit]
    return text


def _header_envelope(hs: HeaderSet, errors: ErrorLog, limits: Limits) -> Envelope:
    senders = _addresses(hs, "from", errors, limits)
    if not senders and "sender" in hs:
        senders = _addresses(hs, "sender", errors, limits)
    subject_raw = hs.first("subject")
    date_raw = hs.first("date")
    date = None
    if date_raw is not None:
        date = parse_date(decode_words(date_raw))
        if date is None:
            errors.add("header.date", "Date header unreadable; date is null")
    mid = hs.first("message-id")
    irt = hs.first("in-reply-to")
    refs = hs.all("references")
    references: list[str] = []
    for value in refs:
        for ref in msg_ids(decode_words(value)):
            if ref not in references and len(references) < _MAX_REFERENCES:
                references.append(ref)
    return {
        "from": senders[0] if senders else None,
        "replyTo": _addresses(hs, "reply-to", errors, limits),
        "to": _addresses(hs, "to", errors, limits),
        "cc": _addresses(hs, "cc", errors, limits),
        "bcc": _addresses(hs, "bcc", errors, limits),
        "subject": decode_words(subject_raw, errors) if subject_raw is not None else None,
        "date": date,
        "messageId": first_msg_id(decode_words(mid)) if mid is not None else None,
        "inReplyTo": first_msg_id(decode_words(irt)) if irt is not None else None,
        "references": references,
    }


def _bodies(
    found: Collected, errors: ErrorLog, limits: Limits, remote_images: RemoteImages
) -> dict[str, Any]:
    text = "\n".join(t for t in found.texts if t) if found.texts else None
    raw_html = "\n".join(found.htmls) if found.htmls else None
    html = None
    if raw_html is not None and len(raw_html) > limits.max_html_chars:
        errors.add(
            "limit.html-size",
            f"HTML body over {limits.max_html_chars} characters; html left out, text kept",
        )
        if not (text and text.strip()):  # no text part, or an empty one beside the HTML
            text = html_to_text(raw_html[: limits.max_text_chars])
        raw_html = None
    if raw_html is not None:
        try:
            html = sanitize_html(raw_html, remote_images)
        except Exception as exc:  # html5lib is robust, but the envelope must survive anyway
            errors.add("body.html", f"HTML could not be sanitized ({type(exc).__name__})")
            html = None
        else:
            if html is None:
                errors.add(
                    "limit.html-depth",
                    f"HTML nested deeper than {MAX_HTML_DEPTH} elements; html left out",
                )
        if not (text and text.strip()):  # no text part, or an empty one beside the HTML
            text = html_to_text(raw_html)
    if text is not None:
        text = _cap(text, limits.max_text_chars, "text", errors)
    return {
        "text": text,
        "replyText": reply_text(text) if text else text,
        "html": html,
    }


def _fallback_body(raw: bytes, body_start: int, errors: ErrorLog, limits: Limits) -> Envelope:
    """When the MIME structure is unreadable: the body bytes as best-effort text."""
    text, _ = decode_bytes(raw[body_start : body_start + limits.max_text_chars])
    text = normalize_newlines(text)
    return {"text": text, "replyText": reply_text(text), "html": None}


def parse_message(
    raw: bytes,
    *,
    blob_sink: BlobSink | None = None,
    limits: Limits = DEFAULT_LIMITS,
    remote_images: RemoteImages = "keep",
) -> Envelope:
    """Parse one RFC 5322 message into the envelope's parsing fields. Never raises on input.

    Fills: from, replyTo, to, cc, bcc, subject, date, messageId, inReplyTo, references, text,
    replyText, html (sanitized), headers, attachments (bytes handed to ``blob_sink``),
    parseErrors, bounce, forwarded. Does not set id/timestamp/envelope/auth/pipeline fields.
    ``remote_images="strip"`` removes remote image URLs from ``html`` (``[mime]``).
    Whatever the bytes, an envelope comes back; the one exception is ``BlobSinkError`` when
    ``blob_sink`` itself fails (storage, not parsing: the caller should retry later).
    """
    errors = ErrorLog()
    if isinstance(raw, (bytearray, memoryview)):
        raw = bytes(raw)
    try:
        return _parse(raw, blob_sink, limits, errors, remote_images)
    except BlobSinkError:
        raise
    except Exception as exc:  # last resort: the contract is "never raises"
        log.exception("- mime parse failed unexpectedly")
        errors.add("parse.internal", f"parser error ({type(exc).__name__}); envelope is partial")
        return _empty(errors)


def configured_parser(
    max_nesting: int = DEFAULT_LIMITS.max_depth, remote_images: RemoteImages = "keep"
) -> Callable[..., Envelope]:
    """``parse_message`` with the ``[mime]`` settings bound (the app passes them in; this
    module reads no config)."""
    return functools.partial(
        parse_message,
        limits=dataclasses.replace(DEFAULT_LIMITS, max_depth=max_nesting),
        remote_images=remote_images,
    )


def _empty(errors: ErrorLog) -> Envelope:
    return {
        "from": None,
        "replyTo": [],
        "to": [],
        "cc": [],
        "bcc": [],
        "subject": None,
        "date": None,
        "messageId": None,
        "inReplyTo": None,
        "references": [],
        "text": None,
        "replyText": None,
        "html": None,
        "headers": {"Message-ID": None, "In-Reply-To": None, "References": None},
        "attachments": [],
        "parseErrors": errors.items,
        "bounce": None,
        "forwarded": None,
    }


def _parse(
    raw: bytes,
    blob_sink: BlobSink | None,
    limits: Limits,
    errors: ErrorLog,
    remote_images: RemoteImages,
) -> Envelope:
    fields, body_start = split_header_block(raw, limits, errors)
    hs = HeaderSet(fields)
    env = _empty(errors)
    try:
        env.update(_header_envelope(hs, errors, limits))
        env["headers"] = headers_object(fields, errors)
    except Exception as exc:  # keep going: the body may still be readable
        log.exception("- header decoding failed")
        errors.add("parse.headers", f"headers partly unreadable ({type(exc).__name__})")
    msg = parse_tree(fields, raw, body_start, errors)
    if msg is None:
        env.update(_fallback_body(raw, body_start, errors, limits))
        return env
    _collect_defects(msg, errors, limits.max_parts)
    env["calendar"] = find_calendar(msg, errors)  # before the walk frees the payloads
    key = hashlib.sha256(raw[:body_start]).hexdigest() + f":{len(raw)}"
    walker = Walker(
        limits=limits,
        errors=errors,
        blob_sink=blob_sink,
        message_key=key,
    )
    found = walker.walk(msg)
    env.update(_bodies(found, errors, limits, remote_images))
    env["attachments"] = found.attachments
    add_forwards(env, found.forwarded)  # attached (message/rfc822) then inline; customer
    env["bounce"] = found.bounce
    if found.bounce is None:
        if found.is_report:
            errors.add("bounce.unreadable", "delivery-status report without readable recipients")
        sender = env["from"]["email"] if env.get("from") else None
        env["bounce"] = guess_bounce(sender, env.get("subject"), env.get("text"))
    if env["subject"] is not None:
        env["subject"] = scrub(env["subject"])
    return env
