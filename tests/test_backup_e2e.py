"""Backups (issue 15): ``mailgate backup`` while ``serve`` accepts a bounded load, ``restore``
into a new data dir, ``db check`` clean, and every message acknowledged before the snapshot
is in it; ``db check`` finds a damaged attachment file; restore refuses a non-empty dir."""

from __future__ import annotations

import json
import os
import smtplib
import sqlite3
import stat
import threading
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

SUPPORT = "support@example.test"
MAX_MESSAGES = 3000  # the load's bound; it stops as soon as the backup is done


def message(n: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = "load@example.org"
    msg["To"] = SUPPORT
    msg["Subject"] = f"Load {n}"
    msg["Message-ID"] = f"<load{n}@example.org>"
    msg.set_content(f"Load message {n}.\n" * 20)
    if n % 10 == 0:
        msg.add_attachment(
            f"file {n} ".encode() * 200, maintype="application", subtype="pdf", filename="f.pdf"
        )
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def count(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
    finally:
        conn.close()


def test_backup_under_load_restore_and_check(mailgate_server: Any, tmp_path: Path) -> None:
    srv = mailgate_server()
    acked: list[float] = []  # time of each 250
    stop = threading.Event()
    errors: list[BaseException] = []

    def load() -> None:
        try:
            with smtplib.SMTP(srv.smtp_host, srv.smtp_port, timeout=30) as client:
                for n in range(MAX_MESSAGES):
                    if stop.is_set():
                        return
                    client.sendmail("load@example.org", [SUPPORT], message(n))
                    acked.append(time.time())
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    sender = threading.Thread(target=load)
    sender.start()
    try:
        deadline = time.monotonic() + 30
        while len(acked) < 150 and time.monotonic() < deadline and not errors:
            time.sleep(0.02)
        # the worker writes attachment files after the 250s: wait (bounded) until it has stored
        # those of the first 150 messages, so the snapshot has real blobs to carry
        blob_dir = srv.data_dir / "attachments"
        while time.monotonic() < deadline + 30 and not errors:
            if blob_dir.is_dir() and sum(1 for p in blob_dir.rglob("*") if p.is_file()) >= 15:
                break
            time.sleep(0.05)
        before = len(acked)
        dest = tmp_path / "backup"
        out = srv.cli("backup", str(dest), "--json")
        during = len(acked) - before
    finally:
        stop.set()
        sender.join(timeout=60)
    assert not errors
    report = json.loads(out.stdout)
    assert before >= 150 and during > 0, "the load ran while the backup was taken"
    assert report["messages"] >= before
    assert report["blobs"] >= 15 and report["mb_per_s"] > 0
    for path in [dest, *dest.rglob("*")]:  # a backup holds the same data: owner-only too
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))

    new = tmp_path / "restored"
    restored = srv.cli("restore", str(dest), "--data-dir", str(new), "--json")
    assert json.loads(restored.stdout)["check"]["ok"] is True
    assert count(new / "mailgate.sqlite") >= before
    check = json.loads(srv.cli("db", "check", "--data-dir", str(new), "--json").stdout)
    assert check["ok"] and check["integrity"] == "ok"
    assert check["raw_checked"] == check["messages"] >= before
    assert check["blobs_checked"] == report["blobs"]
    live = json.loads(srv.cli("db", "check", "--json").stdout)  # the live store, still serving
    assert live["ok"]

    # the restored dir is a working store
    listed = json.loads(
        srv.cli("messages", "list", "--data-dir", str(new), "--json", "--limit", "5").stdout
    )
    assert len(listed) == 5

    again = srv.cli("restore", str(dest), "--data-dir", str(new), check=False)
    assert again.returncode != 0 and b"not empty" in again.stderr

    blob = next(p for p in (new / "attachments").rglob("*") if p.is_file())
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    os.chmod(blob, 0o600)
    blob.write_bytes(bytes(data))
    bad = srv.cli("db", "check", "--data-dir", str(new), "--json", check=False)
    assert bad.returncode == 1
    problems = json.loads(bad.stdout)["problems"]
    assert len(problems) == 1 and "content does not match" in problems[0]
