"""``mailgate serve`` as a subprocess, driven with real SMTP clients (smtplib, swaks).

Covers acceptance through processing, the CLI against a live store, STARTTLS, clean shutdown,
startup refusals, and the crash test: SIGKILL mid-stream loses nothing that got a 250.
"""

from __future__ import annotations

import datetime
import json
import shutil
import smtplib
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.support.server import MailgateServer
from tests.support.tls import write_self_signed


def message(
    subject: str, body: str = "Hello, I need help with my order.\r\n", extra: str = ""
) -> bytes:
    return (
        f"From: Alice Example <alice@example.org>\r\nTo: support@example.test\r\n"
        f"Subject: {subject}\r\nMessage-ID: <{abs(hash(subject))}.{time.time_ns()}@example.org>\r\n"
        f"Date: Wed, 25 Nov 2026 10:00:00 +0000\r\n{extra}\r\n{body}"
    ).encode()


def queued_id(reply: str) -> str:
    return reply.rsplit(" ", 1)[-1]


def test_accept_process_and_inspect(mailgate_server: Any) -> None:
    srv: MailgateServer = mailgate_server()
    raw = message("Where is my order #123456?")
    reply = srv.send(raw, rcpt_to=["support+T-1042@example.test"])
    assert reply.startswith("2.0.0 OK: queued as msg_")
    msg_id = queued_id(reply)
    rows = srv.wait_processed(1)
    assert rows[0]["id"] == msg_id
    env = srv.envelopes()[0]
    assert env["id"] == msg_id
    assert env["subject"] == "Where is my order #123456?"
    assert env["from"] == {"email": "alice@example.org", "name": "Alice Example"}
    assert env["envelope"]["rcptTo"] == ["support+T-1042@example.test"]
    assert env["envelope"]["mailFrom"] == "customer@example.org"
    assert env["envelope"]["clientIp"] == "127.0.0.1"
    assert env["envelope"]["tls"] is False
    assert env["tenant"] == "default"

    listed = json.loads(srv.cli("messages", "list", "--json").stdout)
    assert [m["id"] for m in listed] == [msg_id]
    shown = json.loads(srv.cli("messages", "show", msg_id, "--json").stdout)
    assert shown["subject"] == env["subject"]
    assert srv.cli("messages", "raw", msg_id).stdout == raw
    missing = srv.cli("messages", "show", "msg_nope", check=False)
    assert missing.returncode != 0
    assert missing.stderr.decode().count("\n") == 1 and "Traceback" not in missing.stderr.decode()


def test_protocol_refusals_through_serve(mailgate_server: Any) -> None:
    srv: MailgateServer = mailgate_server(max_size="64KB", max_recipients=3)
    with srv.smtp() as c:
        c.ehlo()
        c.mail("a@example.org")
        assert c.rcpt("nobody@example.test")[0] == 550
        assert c.rcpt("victim@gmail.example")[0] == 554  # open relay attempt
        for i in range(3):
            assert c.rcpt(f"u{i}@acme.support.example.test")[0] == 250
        assert c.rcpt("u9@acme.support.example.test")[0] == 452
        code, resp = c.data(b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 100)
        assert code == 552 and resp.startswith(b"5.3.4")
    assert srv.rows() == []


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_self_signed(
        cert_path,
        key_path,
        "mx.test.mailgate",
        san=x509.DNSName("mx.test.mailgate"),
        valid_for=datetime.timedelta(days=1),
    )
    return cert_path, key_path


def test_starttls(mailgate_server: Any, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    srv: MailgateServer = mailgate_server(smtp_extra=f'tls_cert = "{cert}"\ntls_key = "{key}"')
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    with srv.smtp() as c:
        c.ehlo()
        assert c.has_extn("starttls")
        c.starttls(context=ctx)
        c.ehlo()
        assert c.has_extn("pipelining") and not c.has_extn("auth")  # an MX takes no logins
        c.sendmail("a@example.org", ["support@example.test"], message("over TLS"))
    srv.wait_processed(1)
    assert srv.envelopes()[0]["envelope"]["tls"] is True


def test_smtputf8_and_8bit_through_serve(mailgate_server: Any) -> None:
    srv: MailgateServer = mailgate_server()
    raw = "From: Jürgen <jürgen@exämple.org>\r\nTo: josé@acme.support.example.test\r\nSubject: Grüße\r\n\r\nÄpfel und Birnen\r\n".encode()
    with srv.smtp() as c:
        c.ehlo()
        refused = c.sendmail(
            "jürgen@exämple.org",
            ["josé@acme.support.example.test"],
            raw,
            mail_options=["SMTPUTF8", "BODY=8BITMIME"],
        )
    assert refused == {}
    srv.wait_processed(1)
    env = srv.envelopes()[0]
    assert env["tenant"] == "acme"
    assert env["subject"] == "Grüße"
    assert "Äpfel" in env["text"]
    assert srv.cli("messages", "raw", env["id"]).stdout == raw


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is installed by .ci/run")
def test_swaks_client(mailgate_server: Any) -> None:
    srv: MailgateServer = mailgate_server()
    out = subprocess.run(
        [
            "swaks",
            "--server",
            f"{srv.smtp_host}:{srv.smtp_port}",
            "--from",
            "bob@example.org",
            "--to",
            "billing@example.test",
            "--header",
            "Subject: invoice 4721",
            "--body",
            "Please refund.",
            "--helo",
            "client.example.org",
            "--timeout",
            "20",
        ],
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout.decode() + out.stderr.decode()
    srv.wait_processed(1)
    env = srv.envelopes()[0]
    assert env["subject"] == "invoice 4721"
    assert env["envelope"]["helo"] == "client.example.org"


def test_sigterm_exits_cleanly(tmp_path: Path) -> None:
    srv = MailgateServer(tmp_path).start()
    srv.send(message("before shutdown"))
    srv.wait_processed(1)
    assert srv.stop() == 0
    assert "event=stopped" in srv.log()


def test_port_taken_and_unwritable_data_dir(tmp_path: Path) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    try:
        cfg = tmp_path / "m.toml"
        cfg.write_text(
            f'[smtp]\nlisten = "127.0.0.1:{port}"\n[store]\ndata_dir = "{tmp_path / "d"}"\n[api]\nenabled = false\n'
        )
        out = subprocess.run(
            ["mailgate", "serve", "--config", str(cfg)], capture_output=True, timeout=60
        )
        assert out.returncode == 1
        assert f"smtp.listen = '127.0.0.1:{port}': cannot listen" in out.stderr.decode()
    finally:
        blocker.close()
    afile = tmp_path / "file"
    afile.write_text("x")
    cfg.write_text(f'[store]\ndata_dir = "{afile / "sub"}"\n')
    out = subprocess.run(
        ["mailgate", "serve", "--config", str(cfg)], capture_output=True, timeout=60
    )
    assert out.returncode == 1
    assert "store.data_dir" in out.stderr.decode() and "not writable" in out.stderr.decode()


def test_crash_loses_nothing_acknowledged(mailgate_server: Any) -> None:
    """SIGKILL the whole service mid-stream; every 250'd message is stored once and processed."""
    srv: MailgateServer = mailgate_server()
    total, kill_after = 300, 120
    acked: dict[str, int] = {}  # msg id -> sequence number
    lock = threading.Lock()
    killed = threading.Event()

    def sender(start: int) -> None:
        for i in range(start, total, 4):
            try:
                reply = srv.send(message(f"crash-test {i}"))
            except (OSError, smtplib.SMTPException):
                if killed.is_set():
                    return
                continue
            with lock:
                acked[queued_id(reply)] = i

    threads = [threading.Thread(target=sender, args=(k,), daemon=True) for k in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acked) < kill_after and time.monotonic() < deadline:
        time.sleep(0.005)
    srv.kill()
    killed.set()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert len(acked) >= kill_after

    srv.start()
    rows = srv.wait_processed(len(acked), timeout=60)
    deadline = time.monotonic() + 60
    while any(r["state"] == "spooled" for r in rows) and time.monotonic() < deadline:
        time.sleep(0.1)
        rows = srv.rows()
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids))
    assert set(acked) <= set(ids), "a message that got 250 is missing"
    assert all(r["state"] == "processed" for r in rows)
    subjects = [json.loads(r["envelope"])["subject"] for r in rows]
    assert len(subjects) == len(set(subjects)), "a message was stored twice"


@pytest.mark.parametrize("workers", [0, 2])
def test_inline_and_multi_worker_modes(mailgate_server: Any, workers: int) -> None:
    """workers = 0 runs ingest in the front process; 2 partitions the spool between processes."""
    srv: MailgateServer = mailgate_server(workers=workers)
    for i in range(12):
        srv.send(message(f"mode {workers} #{i}"))
    rows = srv.wait_processed(12)
    assert sorted(json.loads(r["envelope"])["subject"] for r in rows) == sorted(
        f"mode {workers} #{i}" for i in range(12)
    )
    assert all(r["state"] == "processed" for r in rows)
    assert srv.proc is not None
    kids = _children(srv.proc.pid)
    assert len(kids) == workers
    # ingest.worker_nice (default 10): the listener goes first when the cores are busy
    assert all(_nice(k) == _nice(srv.proc.pid) + 10 for k in kids), [_nice(k) for k in kids]


def _stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()  # the fields after "pid (comm)"


def _nice(pid: int) -> int:
    return int(_stat(pid)[16])  # field 19 of proc(5)


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat(int(entry.name))[1]) == pid:
                    kids.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return kids


CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"


def test_real_world_corpus_through_serve(mailgate_server: Any) -> None:
    """Every message of the fixture corpus (fixtures/corpus) goes through SMTP and the
    worker: all accepted, none dead; quarantine only for a stated reason."""
    paths = [
        CORPUS / p
        for p in (CORPUS / "MANIFEST.txt").read_text().splitlines()
        if p and not p.startswith("#")
    ]
    srv: MailgateServer = mailgate_server(max_size="25MB")
    with srv.smtp(timeout=60) as c:
        c.ehlo()
        for p in paths:
            refused = c.sendmail("corpus@example.org", ["support@example.test"], p.read_bytes())
            assert refused == {}
            c.rset()
    rows = srv.wait_processed(len(paths), timeout=180)
    assert len(rows) == len(paths)
    states = {r["state"] for r in rows}
    assert states <= {"processed", "quarantined"}, [
        r["last_error"] for r in rows if r["last_error"]
    ]
    for r in rows:
        env = json.loads(r["envelope"])
        json.dumps(env, ensure_ascii=False).encode("utf-8")  # no lone surrogates anywhere
        if r["state"] == "quarantined":
            assert env["quarantine"]["reason"] in {
                "blocked-extension",
                "double-extension",
                "parse-limit",
                "blocked-type",
                "unscannable",  # boundary torture tests (mime4j, flanker): issue 12
            }


def test_attachment_url_serves_and_heals_a_lost_blob(mailgate_server: Any) -> None:
    """The signed URL in the envelope serves the bytes; a blob lost from disk is re-derived
    from the raw message (the spool is the source of truth)."""
    import urllib.request
    from email.message import EmailMessage
    from urllib.parse import urlsplit

    payload = b"%PDF-1.4 invoice 4721\n" + bytes(range(256)) * 40
    msg = EmailMessage()
    msg["From"] = "alice@example.org"
    msg["To"] = "billing@example.test"
    msg["Subject"] = "invoice attached"
    msg.set_content("See attached.")
    msg.add_attachment(payload, maintype="application", subtype="pdf", filename="invoice.pdf")
    srv: MailgateServer = mailgate_server()
    srv.send(msg.as_bytes(), rcpt_to=["billing@example.test"])
    srv.wait_processed(1)
    att = srv.envelopes()[0]["attachments"][0]
    assert att["filename"] == "invoice.pdf" and att["size"] == len(payload)
    # The envelope stored at ingest has no URL (URLs expire); the API signs one per read.
    req = urllib.request.Request(
        f"{srv.api_base}/v1/messages/{srv.envelopes()[0]['id']}",
        headers={"Authorization": "Bearer test-token-0123456789abcdef0123456789"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        url = json.loads(r.read())["envelope"]["attachments"][0]["url"]
    parts = urlsplit(url)
    local = f"{srv.api_base}{parts.path}?{parts.query}"
    blob = srv.data_dir / "attachments" / att["sha256"][:2] / att["sha256"][2:4] / att["sha256"]
    blob.unlink()
    with urllib.request.urlopen(local, timeout=30) as r:
        assert r.read() == payload
    assert blob.exists()
    tampered = local.replace("sig=", "sig=0")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(tampered, timeout=10)
    assert err.value.code == 403
