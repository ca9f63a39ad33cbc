"""Log lines a pipeline can parse: every line ``mailgate serve`` prints, through a varied session.

The session (accepted mail, refused recipients, a quarantined message, a webhook to a dead
receiver, a malformed DKIM signature, an unknown charset) runs against a real ``serve``
subprocess with its worker; every line it printed is parsed by the small logfmt parser below
(or as JSON), and checked: one key per field, ISO-8601 ``ts``, no Python reprs, ``error=`` on
every warning/error line, a ``trace_id`` wherever there is a ``msg_id``.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import secrets
import socket
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from mailgate.logs import (
    JsonFormatter,
    LogfmtFormatter,
    RateLimitedLog,
    log_context,
    log_fields,
)
from tests.support.dkim_keys import rsa_key
from tests.support.dns_server import DnsTestServer, dns_server
from tests.support.server import MailgateServer

__all__ = ["dns_server"]

ISO_TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?Z$")
REPR_MARKS = ("{'", "[('", "<object", "[{'", "': ")
KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*=")
_decoder = json.JSONDecoder()


def parse_logfmt(line: str) -> list[tuple[str, str]]:
    """``key=value`` pairs separated by one space; a value is bare (no space, quote, ``=``)
    or a JSON string. Raises ValueError on anything else."""
    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(line):
        m = KEY.match(line, i)
        if m is None:
            raise ValueError(f"no key at column {i}: {line[i : i + 40]!r}")
        key = m.group()[:-1]
        i = m.end()
        if line.startswith('"', i):
            value, i = _decoder.raw_decode(line, i)
            if not isinstance(value, str):
                raise ValueError(f"{key}: quoted value is not a string")
        else:
            end = line.find(" ", i)
            end = len(line) if end < 0 else end
            value = line[i:end]
            if value == "" or '"' in value or "=" in value:
                raise ValueError(f"{key}: bad bare value {value!r}")
            i = end
        pairs.append((key, value))
        if i < len(line):
            if line[i] != " ":
                raise ValueError(f"expected a space at column {i}")
            i += 1
            if i == len(line):
                raise ValueError("trailing space")
    return pairs


def parse_json_line(line: str) -> list[tuple[str, Any]]:
    pairs: list[tuple[str, Any]] = json.loads(line, object_pairs_hook=lambda kv: kv)
    assert isinstance(pairs, list), line
    return pairs


def check_lines(text: str, parse: Any) -> list[dict[str, Any]]:
    """Every line parses and passes the checks; returns the lines as dicts."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        where = f"line {n}: {line[:300]}"
        try:
            pairs = parse(line)
        except ValueError as exc:
            raise AssertionError(f"unparseable ({exc}): {where}") from None
        keys = [k for k, _ in pairs]
        assert len(keys) == len(set(keys)), f"duplicate keys: {where}"
        rec = dict(pairs)
        assert keys[:3] == ["ts", "level", "logger"], where
        assert ISO_TS.match(str(rec["ts"])), where
        assert "event" in rec, where
        for key, value in pairs:
            text_value = value if isinstance(value, str) else json.dumps(value)
            if key == "exc":
                continue  # a traceback quotes source lines
            assert not any(m in text_value for m in REPR_MARKS), f"repr in {key}: {where}"
        if rec["level"] in ("warning", "error", "critical"):
            assert rec.get("error"), f"failure line without error=: {where}"
        if rec["level"] != "error":
            assert "exc" not in rec, f"traceback below error level: {where}"
        if rec.get("msg_id"):
            assert rec.get("trace_id"), f"msg_id without trace_id: {where}"
        out.append(rec)
    assert out, "serve printed nothing"
    return out


# ---------------------------------------------------------------------- formatter units


def _record(msg: str, level: int = logging.INFO, **extra: Any) -> logging.LogRecord:
    rec = logging.LogRecord("mailgate.test", level, __file__, 1, msg, (), None)
    for k, v in extra.items():
        setattr(rec, k, v)
    return rec


def test_reserved_field_names_are_renamed_and_values_are_json() -> None:
    extra = log_fields(
        "msg_1",
        "trc_1",
        event="evt_9",
        level="x",
        detail={"a": [1, 2], "b": "c d"},
        pair=("x", 1),
        flag=True,
    )
    line = LogfmtFormatter().format(_record("delivered", **extra))
    pairs = parse_logfmt(line)
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys))
    rec = dict(pairs)
    assert rec["event"] == "delivered"
    assert rec["field_event"] == "evt_9" and rec["field_level"] == "x"
    assert json.loads(rec["detail"]) == {"a": [1, 2], "b": "c d"}
    assert rec["pair"] == '["x",1]' and rec["flag"] == "true"
    doc = json.loads(JsonFormatter().format(_record("delivered", **extra)))
    assert doc["detail"] == {"a": [1, 2], "b": "c d"} and doc["field_event"] == "evt_9"
    assert ISO_TS.match(doc["ts"])


def test_nested_fields_dict_is_merged_not_repr() -> None:
    line = LogfmtFormatter().format(_record("refused", **log_fields(fields={"reason": "relay"})))
    rec = dict(parse_logfmt(line))
    assert rec["reason"] == "relay" and "fields" not in rec


def test_exception_gives_error_and_traceback_only_at_error_level() -> None:
    try:
        raise OSError("disk full")
    except OSError:
        import sys

        exc_info = sys.exc_info()
    warn = _record("could not write", logging.WARNING)
    warn.exc_info = exc_info
    rec = dict(parse_logfmt(LogfmtFormatter().format(warn)))
    assert rec["error"] == "OSError: disk full" and "exc" not in rec
    err = _record("crashed", logging.ERROR)
    err.exc_info = exc_info
    rec = dict(parse_logfmt(LogfmtFormatter().format(err)))
    assert rec["error"] == "OSError: disk full"
    assert "Traceback" in rec["exc"] and "disk full" in rec["exc"]


def test_context_ids_reach_every_line_inside() -> None:
    with log_context("msg_ctx", "trc_ctx"):
        rec = dict(parse_logfmt(LogfmtFormatter().format(_record("parsed"))))
    assert rec["msg_id"] == "msg_ctx" and rec["trace_id"] == "trc_ctx"
    rec = dict(parse_logfmt(LogfmtFormatter().format(_record("idle"))))
    assert "msg_id" not in rec and "trace_id" not in rec


def test_rate_limited_log_counts_what_it_left_out() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("mailgate.test.ratelimit")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LogfmtFormatter())
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    limited = RateLimitedLog(logger, interval=0.3)
    written = [
        limited.log(logging.WARNING, "k", "store failed", exc=OSError("full")) for _ in range(50)
    ]
    assert written.count(True) == 1
    time.sleep(0.35)
    assert limited.log(logging.WARNING, "k", "store failed", exc=OSError("full"))
    lines = [dict(parse_logfmt(x)) for x in stream.getvalue().splitlines()]
    assert len(lines) == 2
    assert "suppressed" not in lines[0] and lines[1]["suppressed"] == "49"
    assert lines[1]["error"] == "OSError: full"


# ---------------------------------------------------------------------- serve, end to end


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mail(subject: str, *, body: str = "Hello.\n", attach: tuple[str, bytes] | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Customer <customer@example.org>"
    msg["To"] = "support@example.test"
    msg["Subject"] = subject
    msg["Date"] = "Thu, 23 Apr 2026 10:31:58 +0000"
    msg["Message-ID"] = f"<{secrets.token_hex(6)}@example.org>"
    msg.set_content(body)
    if attach:
        msg.add_attachment(
            attach[1], maintype="application", subtype="octet-stream", filename=attach[0]
        )
    return msg.as_bytes()


MALFORMED_DKIM = (
    b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s1; h=from:to;;; bh==; b=%%%;\r\n"
    b" c=junk/junk; l=abc; x=notanumber\r\n"
    b"From: ceo@example.com\r\nTo: support@example.test\r\nSubject: malformed signature\r\n"
    b"Message-ID: <dkim-bad@example.com>\r\n\r\nBody.\r\n"
)

UNKNOWN_CHARSET = (
    b"From: someone@example.org\r\nTo: support@example.test\r\n"
    b"Subject: =?x-no-such-charset?Q?caf=E9?=\r\nMessage-ID: <charset@example.org>\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=x-no-such-charset\r\n\r\n"
    b"caf\xe9\r\n"
)


def phish() -> bytes:
    return (
        b"From: CEO <ceo@example.com>\r\nTo: support@example.test\r\nSubject: Wire now\r\n"
        b"Message-ID: <phish@attacker.example>\r\nDate: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
        b"\r\nPay.\r\n"
    )


@pytest.fixture
def zone(dns_server: DnsTestServer) -> DnsTestServer:
    dns_server.add_txt("example.com", "v=spf1 ip4:192.0.2.0/24 -all")
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    rsa_key().publish(dns_server, "s1", "example.com")
    return dns_server


def run_session(tmp_path: Path, zone: DnsTestServer, fmt: str) -> str:
    """Start serve, run the varied session, stop it; returns everything it printed."""
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    dead = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    srv = MailgateServer(
        tmp_path,
        auth=True,
        auth_extra=(
            f'nameservers = ["{zone.address}"]\ntimeout = "500ms"\nbudget = "3s"\n'
            'dmarc_enforce = "quarantine"'
        ),
        extra_toml=(
            f'[[webhooks]]\nname = "dead"\nurl = "{dead}"\nsecrets = ["{secret}"]\n'
            'timeout = "1s"\n\n[delivery]\npoll_interval = "100ms"\n'
            'retry_schedule = "0s, 100ms"\njitter = 0.0\n'
        ),
    )
    text = srv.config_path.read_text()
    srv.config_path.write_text(
        text.replace('[log]\nlevel = "info"', f'[log]\nlevel = "info"\nformat = "{fmt}"')
    )
    srv.start()
    try:
        srv.send(mail("Order 1042 question"))
        with srv.smtp() as client:
            client.ehlo()
            client.mail("customer@example.org")
            assert client.rcpt("someone@foreign.example")[0] == 554
            assert client.rcpt("nobody@example.test")[0] == 550
            assert client.rcpt("billing@example.test")[0] == 250
            client.data(mail("Billing question"))
        srv.send(mail("Statement", attach=("statement.pdf.exe", b"MZ\x90\x00" + b"\0" * 64)))
        srv.send(phish(), mail_from="billing@attacker.example")
        srv.send(MALFORMED_DKIM, mail_from="ceo@example.com")
        srv.send(UNKNOWN_CHARSET, mail_from="someone@example.org")
        rows = srv.wait_processed(6)
        states = sorted(r["state"] for r in rows)
        assert states.count("quarantined") >= 2, states  # the .exe and the DMARC fail
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with srv.db() as conn:
                dead_rows = conn.execute(
                    "SELECT count(*) FROM outbox WHERE state = 'dead'"
                ).fetchone()[0]
            if dead_rows >= 1:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"no webhook went dead:\n{srv.log()}")
    finally:
        srv.stop()
    return srv.log_path.read_text(errors="strict")


def _assert_session_facts(lines: list[dict[str, Any]]) -> None:
    events = [str(r["event"]) for r in lines]
    assert "accepted" in events and "processed" in events
    refused = [r for r in lines if r["event"] == "recipient refused"]
    assert len(refused) == 2, refused
    assert {r["rcpt_domain"] for r in refused} == {"foreign.example", "example.test"}, refused
    assert all(r.get("reason") for r in refused), refused
    # the session's trace id: its refused RCPTs and the message it brought share it
    assert refused[0]["trace_id"] == refused[1]["trace_id"], refused
    assert any(
        r["event"] == "accepted" and r["trace_id"] == refused[0]["trace_id"] for r in lines
    ), refused
    # the webhook to nowhere: its failure line names the message, the trace and the error
    failed = [r for r in lines if r["event"] == "webhook not delivered" and r["level"] == "warning"]
    assert failed and all(r.get("msg_id") and r.get("error") for r in failed), failed
    # a message's life (accepted in the front, processed in the worker) shares its trace id
    traces = {r["msg_id"]: r["trace_id"] for r in lines if r["event"] == "accepted"}
    for r in lines:
        if r.get("msg_id") in traces:
            assert r["trace_id"] == traces[r["msg_id"]], r
    # an unknown charset: one warning line that says why, no traceback
    unreadable = [r for r in lines if r["event"] == "message partly unreadable"]
    assert len(unreadable) == 1, unreadable
    assert unreadable[0]["level"] == "warning" and "encoded" in str(unreadable[0]["error"])
    # a signature dkimpy cannot parse: the auth line gives the DKIM result and its reason
    dkim = [r for r in lines if r["event"] == "auth checked" and r.get("dkim") == "permerror"]
    assert len(dkim) == 1 and dkim[0].get("dkim_reason"), dkim
    # expected failures are warnings at most, never tracebacks
    assert not any("exc" in r for r in lines), [r for r in lines if "exc" in r]
    assert not any(r["level"] == "error" for r in lines), [
        r for r in lines if r["level"] == "error"
    ]


@pytest.mark.slow
def test_every_serve_line_is_logfmt(tmp_path: Path, zone: DnsTestServer) -> None:
    lines = check_lines(run_session(tmp_path, zone, "logfmt"), parse_logfmt)
    _assert_session_facts(lines)


@pytest.mark.slow
def test_every_serve_line_is_json(tmp_path: Path, zone: DnsTestServer) -> None:
    lines = check_lines(run_session(tmp_path, zone, "json"), parse_json_line)
    _assert_session_facts(lines)


@pytest.fixture(autouse=True)
def _no_stray_handlers() -> Iterator[None]:
    yield
    logging.getLogger("mailgate.test.ratelimit").handlers.clear()
