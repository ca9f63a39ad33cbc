"""SIGHUP reloads a running ``mailgate serve``: a renewed certificate, a changed rule and new API
tokens take effect without dropping a connection; a broken config is refused and the old one
keeps serving."""

from __future__ import annotations

import datetime
import hashlib
import os
import signal
import smtplib
import ssl
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.support.tls import write_self_signed

HOST = "mx.test.mailgate"
OLD_TOKEN = "test-token-0123456789abcdef0123456789"  # tests/support/server.py BASE_TOML
NEW_TOKEN = "reloaded-token-abcdefghijklmnopqrstuvwxyz"


def make_cert(directory: Path, tag: str) -> tuple[Path, Path, str]:
    """A self-signed certificate for HOST; returns (cert, key, sha256 of the DER)."""
    cert_path, key_path = directory / f"cert-{tag}.pem", directory / f"key-{tag}.pem"
    cert = write_self_signed(
        cert_path,
        key_path,
        HOST,
        san=x509.DNSName(HOST),
        valid_from=datetime.timedelta(minutes=1),
        valid_for=datetime.timedelta(days=1),
    )
    return (
        cert_path,
        key_path,
        hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
    )


def install(src: Path, dst: Path) -> None:
    """Replace ``dst`` atomically, as certbot and config management do."""
    tmp = dst.with_suffix(".new")
    tmp.write_bytes(src.read_bytes())
    os.replace(tmp, dst)


def rule(queue: str) -> str:
    return f'[[rules]]\nname = "probe"\nif = {{ subject = "/reload-probe/" }}\nthen = {{ queue = "{queue}" }}\n'


def message(n: int | str) -> str:
    return (
        f"From: a@example.org\r\nTo: support@example.test\r\nSubject: reload-probe {n}\r\n"
        f"Message-ID: <probe-{n}@example.org>\r\n\r\nbody {n}\r\n"
    )


def served_fingerprint(srv: Any) -> str:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with srv.smtp(timeout=10) as client:
        client.starttls(context=ctx)
        der = client.sock.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest()


def api_status(srv: Any, token: str) -> int:
    req = urllib.request.Request(
        f"{srv.api_base}/v1/messages", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def queue_of(srv: Any, n: int | str) -> str:
    for env in srv.envelopes():
        if env.get("subject") == f"reload-probe {n}":
            return str(env["queue"])
    raise AssertionError(f"no envelope for probe {n}")


def wait_log(srv: Any, needle: str, count: int, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = srv.log_path.read_text(errors="replace")
        if text.count(needle) >= count:
            return text
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} not logged {count}x:\n{srv.log()}")


class SenderLoop(threading.Thread):
    """Sends messages back to back on fresh connections; records every failure."""

    def __init__(self, srv: Any) -> None:
        super().__init__(daemon=True)
        self.srv = srv
        self.sent = 0
        self.failures: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                self.srv.send(message(f"loop-{self.sent}"))
                self.sent += 1
            except (OSError, smtplib.SMTPException) as exc:
                self.failures.append(repr(exc))


def test_sighup_swaps_certificate_rule_and_tokens_and_refuses_a_broken_config(
    mailgate_server: Any, tmp_path: Path
) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    old_cert, old_key, old_fp = make_cert(certs, "old")
    new_cert, new_key, new_fp = make_cert(certs, "new")
    live_cert, live_key = certs / "live-cert.pem", certs / "live-key.pem"
    install(old_cert, live_cert)
    install(old_key, live_key)
    rules_path = tmp_path / "rules.toml"
    rules_path.write_text(rule("before"))
    srv = mailgate_server(
        smtp_extra=f'tls_cert = "{live_cert}"\ntls_key = "{live_key}"',
        extra_toml=f'[pipeline]\nrules_file = "{rules_path}"\n',
    )
    srv.send(message(1))
    srv.wait_processed(1)
    assert queue_of(srv, 1) == "before"
    assert served_fingerprint(srv) == old_fp
    assert api_status(srv, OLD_TOKEN) == 200

    loop = SenderLoop(srv)
    loop.start()
    try:
        while loop.sent < 5:
            time.sleep(0.01)
        install(new_cert, live_cert)
        install(new_key, live_key)
        rules_path.write_text(rule("after"))
        text = srv.config_path.read_text().replace(OLD_TOKEN, NEW_TOKEN)
        srv.config_path.write_text(text.replace("workers = 1", "workers = 2"))
        before = loop.sent
        srv.proc.send_signal(signal.SIGHUP)
        log = wait_log(srv, "logger=mailgate.app event=reloaded", 1)
        while loop.sent < before + 20:  # keep sending across and after the reload
            time.sleep(0.01)
    finally:
        loop.halt.set()
        loop.join(timeout=30)
    assert loop.failures == []
    assert "keys=ingest.workers" in log  # named, and kept: still one worker
    assert served_fingerprint(srv) == new_fp
    assert api_status(srv, NEW_TOKEN) == 200
    assert api_status(srv, OLD_TOKEN) == 401
    srv.send(message(2))
    srv.wait_processed(loop.sent + 2)
    assert queue_of(srv, 2) == "after"  # the worker process runs the new rule

    # a broken config (a bad key and a bad rule) is refused, every error logged; nothing changes
    good_config = srv.config_path.read_text()
    srv.config_path.write_text(good_config.replace("max_recipients = 10", "max_recipients = 0"))
    rules_path.write_text(rule("broken").replace("/reload-probe/", "/unclosed(/"))
    srv.proc.send_signal(signal.SIGHUP)
    log = wait_log(srv, 'event="reload refused"', 2)
    refused = [line for line in log.splitlines() if 'event="reload refused"' in line]
    assert any("smtp.max_recipients = 0: expected a positive integer" in line for line in refused)
    assert any("rules.toml" in line and "expected a valid regex" in line for line in refused)
    assert all(line.startswith("ts=") and "level=error" in line for line in refused)
    srv.send(message(3))
    srv.wait_processed(loop.sent + 3)
    assert queue_of(srv, 3) == "after"
    assert served_fingerprint(srv) == new_fp
    assert api_status(srv, NEW_TOKEN) == 200

    # a valid file whose certificate and key do not belong together: refused when loading them
    srv.config_path.write_text(good_config)
    rules_path.write_text(rule("after"))
    install(old_key, live_key)
    srv.proc.send_signal(signal.SIGHUP)
    log = wait_log(srv, 'event="reload refused"', 3)
    refused = [line for line in log.splitlines() if 'event="reload refused"' in line]
    assert "smtp.tls_cert/tls_key: cannot load" in refused[-1]
    assert served_fingerprint(srv) == new_fp
    assert srv.proc.poll() is None


def test_sighup_with_inline_workers_applies_a_new_domain_and_rule(mailgate_server: Any) -> None:
    """``workers = 0``: the pipeline runs in the serve process and is rebuilt in place."""
    srv = mailgate_server(workers=0, extra_toml=rule("before"))
    srv.send(message("inline-1"))
    srv.wait_processed(1)
    assert queue_of(srv, "inline-1") == "before"
    with pytest.raises(smtplib.SMTPRecipientsRefused):  # not one of ours yet
        srv.send(message("x"), rcpt_to=["help@new.example"])
    text = srv.config_path.read_text().replace(rule("before"), rule("after"))
    srv.config_path.write_text(
        text + '\n[[domains]]\nname = "new.example"\nmailboxes = ["help"]\ntenant = "default"\n'
    )
    srv.proc.send_signal(signal.SIGHUP)
    wait_log(srv, "logger=mailgate.app event=reloaded", 1)
    srv.send(message("inline-2"), rcpt_to=["help@new.example"])
    srv.wait_processed(2)
    assert queue_of(srv, "inline-2") == "after"
