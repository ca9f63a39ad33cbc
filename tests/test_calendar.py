"""Invitations: REQUEST, CANCEL, COUNTER and REPLY parts give ``calendar``; the answers of a
calendar client are intent ``calendar``, which the reply guard never answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.envelope import new_id
from mailgate.mime.calendar import summarize
from mailgate.mime.parse import parse_message
from mailgate.pipeline.offline import MemoryPorts
from mailgate.pipeline.runner import PipelineRunner
from mailgate.reply.guard import Guard, OwnDomains
from tests.support.mime import assert_valid_envelope
from tests.support.pipeline import make_config

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "calendar"
UID = "040000008200E00074C5B7101A82E0080000000010A1B2C3D4E5F6"


@pytest.mark.parametrize(
    ("name", "method", "sequence"),
    [("request.eml", "REQUEST", 0), ("cancel.eml", "CANCEL", 2), ("counter.eml", "COUNTER", 1)],
)
def test_invitation_parts(name: str, method: str, sequence: int) -> None:
    env = parse_message((FIXTURES / name).read_bytes())
    assert env["calendar"] == {
        "method": method,
        "uid": UID,
        "summary": "Invoice review (order 5521)",
        # 10:00 in W. Europe Standard Time, summer time (its VTIMEZONE): 08:00 UTC
        "start": "2026-04-28T08:00:00Z",
        "end": "2026-04-28T08:30:00Z",
        "organizer": {"email": "jane@customer.test", "name": "Jane Customer"},
        "attendees": [
            {
                "email": "support@example.test",
                "name": "Support",
                "partstat": "NEEDS-ACTION",
                "role": "REQ-PARTICIPANT",
            },
            {
                "email": "pat.lee@example.test",
                "name": "Lee, Pat",
                "partstat": "NEEDS-ACTION",
                "role": "OPT-PARTICIPANT",
            },
        ],
        "location": "Teams meeting",
        "sequence": sequence,
    }
    assert [a["filename"] for a in env["attachments"]] == ["attachment-1.ics"]
    assert_valid_envelope(env)


def test_ics_attachment_reply() -> None:
    env = parse_message((FIXTURES / "reply.eml").read_bytes())
    assert env["calendar"]["method"] == "REPLY" and env["calendar"]["uid"] == UID
    assert [a["filename"] for a in env["attachments"]] == ["invite.ics"]
    assert_valid_envelope(env)


def test_unreadable_calendar_is_a_parse_error_not_a_failure() -> None:
    env = parse_message((FIXTURES / "broken.eml").read_bytes())
    assert env["calendar"] is None
    assert "calendar.unreadable" in {e["code"] for e in env["parseErrors"]}
    assert env["text"].startswith("see invite")


def test_hostile_rfc2231_filename_does_not_break_the_parse() -> None:
    """An encoded NUL in ``filename*`` makes the stdlib's get_filename raise (found by the fuzz
    test): the calendar finder reads names with our tolerant parser, so the rest still parses."""
    raw = (
        b"From: a@example.org\r\nTo: support@example.test\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
        b"hi\r\n--b\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Disposition: attachment; filename*=utf-8''a%00b.ics\r\n\r\nAAAA\r\n--b--\r\n"
    )
    env = parse_message(raw)
    codes = {e["code"] for e in env["parseErrors"]}
    assert "parse.internal" not in codes and "parse.structure" not in codes
    assert env["text"].startswith("hi")
    assert len(env["attachments"]) == 1
    assert_valid_envelope(env)


def test_no_calendar() -> None:
    raw = b"From: a@b.test\r\nTo: support@example.test\r\nSubject: hi\r\n\r\nhello\r\n"
    assert parse_message(raw)["calendar"] is None


def test_all_day_floating_and_minimal_events() -> None:
    ics = (
        b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:u1\r\nDTSTART;VALUE=DATE:20260501\r\n"
        b"DTEND:20260501T170000\r\nORGANIZER:MAILTO:Boss@Example.test\r\nATTENDEE:x@y.test\r\n"
        b"END:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    got = summarize(ics)
    assert got["method"] is None and got["start"] == "2026-05-01"
    assert got["end"] == "2026-05-01T17:00:00" and got["sequence"] == 0
    assert got["organizer"] == {"email": "boss@example.test", "name": ""}
    assert got["attendees"] == [{"email": "x@y.test", "name": ""}]
    assert got["summary"] is None and got["location"] is None


@pytest.mark.parametrize(
    ("name", "intent"),
    [("request.eml", "human"), ("cancel.eml", "calendar"), ("counter.eml", "calendar"),
     ("reply.eml", "calendar")],
)  # fmt: skip
async def test_through_the_pipeline_and_the_guard(name: str, intent: str) -> None:
    """End to end: parse, run every stage, validate against the schema, ask the reply guard."""
    cfg = make_config()
    runner = PipelineRunner(cfg, MemoryPorts())
    env = parse_message((FIXTURES / name).read_bytes())
    env.update(
        id=new_id("msg"),
        timestamp="2026-04-23T09:30:00Z",
        tenant="default",
        traceId="t",
        envelope={
            "mailFrom": env["from"]["email"],
            "rcptTo": ["support@example.test"],
            "clientIp": "203.0.113.5",
            "helo": "mx.customer.test",
            "tls": True,
        },
    )
    await runner.process(env)
    assert env["intent"] == intent
    assert_valid_envelope(env)
    skip = Guard(OwnDomains(cfg.domains, [cfg.reply.from_])).check(env)
    if intent == "calendar":
        assert skip is not None and skip.reason == "not-human"
    else:
        assert skip is None or skip.reason != "not-human"
