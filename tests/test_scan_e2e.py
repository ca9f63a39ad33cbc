"""End to end through ``mailgate serve`` with a real clamd and a real rspamd."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from tests.support.clamd import Clamd
from tests.support.mime import envelope_validator
from tests.support.rspamd import Rspamd
from tests.support.server import MailgateServer, wait_for
from tests.support.smtp_sink import SmtpSink, smtp_sink

__all__ = ["smtp_sink"]

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "scan"
TESTFILES = Path("/usr/share/clamav-testfiles")
EICAR_SIG = "Mailgate.Test.EICAR.UNOFFICIAL"


def engines_toml(av: Clamd | None, spam: Rspamd | None, **extra: str) -> str:
    lines = ["[pipeline]", "max_attempts = 500", 'stage_timeout = "5s"']
    if spam is not None:
        lines += ["[spam]", 'engine = "rspamd"', f'url = "{spam.url}"', 'timeout = "2s"']
    if av is not None:
        lines += [
            "[antivirus]",
            'engine = "clamav"',
            f'address = "{av.address}"',
            'timeout = "2s"',
            'unready_after = "0s"',
        ]
    lines += [f"{k} = {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def by_message_id(srv: MailgateServer) -> dict[str, tuple[str, dict[str, Any]]]:
    out = {}
    for row in srv.rows():
        env = json.loads(row["envelope"]) if row["envelope"] else {}
        out[str(env.get("messageId") or row["id"]).strip("<>")] = (row["state"], env)
    return out


def _clam_zip_mail() -> bytes:
    m = EmailMessage()
    m["From"] = "bob@example.org"
    m["To"] = "support@example.test"
    m["Subject"] = "archive"
    m["Message-ID"] = "<clam-zip@example.org>"
    m.set_content("archive attached\n")
    data = (TESTFILES / "clam.7z").read_bytes()
    m.add_attachment(data, maintype="application", subtype="x-7z-compressed", filename="clam.7z")
    return bytes(m)


def test_viruses_spam_and_ham(
    mailgate_server: Callable[..., MailgateServer],
    clamd_running: Clamd,
    rspamd_running: Rspamd,
    smtp_sink: SmtpSink,
) -> None:
    reply = (
        f'[reply]\nenabled = true\nsmarthost = "{smtp_sink.address}"\n'
        'from = "Example Support <support@example.test>"\nretry_schedule = "0s, 100ms*50"\n'
    )
    srv = mailgate_server(extra_toml=engines_toml(clamd_running, rspamd_running) + reply)
    names = [
        "eicar-attachment.eml",
        "eicar-zip.eml",
        "eicar-tnef.eml",
        "gtube.eml",
        "ham.eml",
        "spammy.eml",
    ]
    for name in names:
        srv.send((FIXTURES / name).read_bytes())
    srv.send(_clam_zip_mail())
    srv.wait_processed(len(names) + 1)
    got = by_message_id(srv)
    validator = envelope_validator()
    for _, env in got.values():
        validator.validate(env)  # the spam and antivirus fields as the schema says

    for mid, part in (
        ("eicar-1@example.org", "invoice.txt"),
        ("eicar-zip-1@example.org", "report.zip"),
        ("eicar-tnef-1@example.org", "notes.txt"),  # the parser unpacks the TNEF
    ):
        state, env = got[mid]
        assert state == "quarantined", mid
        assert env["quarantine"]["reason"] == "virus"
        assert EICAR_SIG in env["quarantine"]["detail"]
        assert env["antivirus"]["signature"] == EICAR_SIG and env["antivirus"]["clean"] is False
        assert part in env["antivirus"]["attachments"], (mid, env["antivirus"])

    state, env = got["clam-zip@example.org"]
    assert state == "quarantined" and env["antivirus"]["signature"] == (
        "Mailgate.Test.ClamExe.UNOFFICIAL"
    )

    state, env = got["gtube-1@example.org"]
    assert state == "quarantined" and env["quarantine"]["reason"] == "spam"
    assert env["spam"]["flagged"] is True and env["spam"]["score"] == 15.0
    assert env["spam"]["action"] == "reject" and env["antivirus"]["clean"] is True

    state, env = got["ham-1@example.org"]
    assert state == "processed" and env["quarantine"] is None
    assert env["spam"]["flagged"] is False and env["spam"]["score"] < 3
    assert env["spam"]["error"] is None and env["antivirus"]["clean"] is True

    state, env = got["spammy-1@lottery-winner.example"]
    assert state == "processed"  # add header: delivered, flagged, never acknowledged
    assert env["spam"]["flagged"] is True and env["spam"]["action"] == "add header"
    assert env["reply"]["queued"] is False and env["reply"]["reason"] == "spam"

    # exactly one acknowledgement: the ham; none for spam or viruses
    smtp_sink.wait_for(1, timeout=30)
    time.sleep(0.3)
    assert len(smtp_sink.received()) == 1

    def scan_metrics() -> bool:  # workers publish their registries every few seconds
        text = urllib.request.urlopen(srv.api_base + "/metrics", timeout=5).read().decode()
        return (
            'mailgate_scan_total{engine="clamav",outcome="virus"}' in text
            and 'mailgate_scan_seconds_bucket{engine="rspamd"' in text
        )

    wait_for(scan_metrics, "scan metrics on /metrics", timeout=20)


def _readyz(srv: MailgateServer) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(srv.api_base + "/readyz", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_clamd_outage_defers_then_delivers(
    mailgate_server: Callable[..., MailgateServer], clamd_running: Clamd
) -> None:
    srv = mailgate_server(extra_toml=engines_toml(clamd_running, None))
    assert _readyz(srv)[0] == 200
    clamd_running.stop()
    try:
        for i in range(3):
            raw = (FIXTURES / "ham.eml").read_bytes().replace(b"ham-1@", f"ham-out-{i}@".encode())
            srv.send(raw)

        def deferred() -> bool:
            rows = srv.rows()
            return len(rows) == 3 and all(r["attempts"] >= 2 for r in rows)

        wait_for(deferred, "every message deferred at least twice")
        assert {r["state"] for r in srv.rows()} == {"spooled"}  # none delivered unscanned
        status, body = _readyz(srv)
        assert status == 503 and body["checks"]["scan:clamav"]["up"] is False
    finally:
        clamd_running.start()
    rows = srv.wait_processed(3)
    assert {r["state"] for r in rows} == {"processed"}
    for env in srv.envelopes():
        assert env["antivirus"] == {
            "engine": "clamav",
            "clean": True,
            "signature": None,
            "error": None,
        }
    assert _readyz(srv)[0] == 200


def test_rspamd_outage_delivers_with_error(
    mailgate_server: Callable[..., MailgateServer], rspamd_running: Rspamd
) -> None:
    srv = mailgate_server(extra_toml=engines_toml(None, rspamd_running))
    rspamd_running.stop()
    srv.send((FIXTURES / "ham.eml").read_bytes())
    [row] = srv.wait_processed(1)
    assert row["state"] == "processed"
    [env] = srv.envelopes()
    assert env["spam"]["score"] is None and env["spam"]["flagged"] is False
    assert "rspamd unavailable" in env["spam"]["error"]


def test_scan_cli(tmp_path: Path, clamd_running: Clamd, rspamd_running: Rspamd) -> None:
    """``mailgate scan`` prints both engines' verdicts (text and --json)."""
    import subprocess
    import sys

    config = tmp_path / "mailgate.toml"
    config.write_text(engines_toml(clamd_running, rspamd_running))

    def scan(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mailgate.cli", "scan", "--config", str(config), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    text = scan(str(FIXTURES / "eicar-zip.eml"))
    assert text.returncode == 0, text.stderr
    assert f"antivirus (clamav): VIRUS {EICAR_SIG}" in text.stdout
    assert "verdict: held (virus)" in text.stdout
    out = scan("--json", "--ip", "192.0.2.10", str(FIXTURES / "gtube.eml"))
    result = json.loads(out.stdout)
    assert result["antivirus"]["clean"] is True
    assert result["spam"]["action"] == "reject" and result["spam"]["flagged"] is True
    assert result["hold"] == ["spam"] and result["errors"] == 0


def test_check_at_data_refuses_with_554(
    mailgate_server: Callable[..., MailgateServer], clamd_running: Clamd, rspamd_running: Rspamd
) -> None:
    """``check_at = "data"``: a virus and GTUBE get 554 5.7.1 and are never stored."""
    import smtplib

    import pytest

    toml = engines_toml(clamd_running, rspamd_running)
    toml = toml.replace('engine = "rspamd"', 'engine = "rspamd"\ncheck_at = "data"')
    toml = toml.replace('engine = "clamav"', 'engine = "clamav"\ncheck_at = "data"')
    srv = mailgate_server(extra_toml=toml)
    for name, text in (("eicar-zip.eml", b"virus"), ("gtube.eml", b"spam")):
        with pytest.raises(smtplib.SMTPDataError) as err:
            srv.send((FIXTURES / name).read_bytes())
        raw_error = err.value.smtp_error
        error = raw_error if isinstance(raw_error, bytes) else raw_error.encode()
        assert err.value.smtp_code == 554 and error.startswith(b"5.7.1")
        assert text in error
    srv.send((FIXTURES / "ham.eml").read_bytes())
    [row] = srv.wait_processed(1)
    assert row["state"] == "processed"
    [env] = srv.envelopes()
    assert env["messageId"] == "<ham-1@example.org>" and env["antivirus"]["clean"] is True
