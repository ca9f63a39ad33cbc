"""Retention (issue 15) through a real ``serve``: back-dated messages are purged in batches by
the background purger while mail keeps arriving; dedup and threading still work against the
tombstones the purged messages leave; ``mailgate purge`` dry run, --before and the summary."""

from __future__ import annotations

import json
import smtplib
import sqlite3
import threading
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

DAY = 86400.0
SUPPORT = "support@example.test"

RETENTION = """
[retention]
raw = "7d"
envelopes = "30d"
attachments = "7d"
interval = "1s"
batch_size = 4

[[retention.rules]]
tenant = "acme"
envelopes = "0s"
raw = "0s"
attachments = "0s"
"""


def message(n: int, *, sender: str = "carol@example.org", reply_to: str | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = SUPPORT
    msg["Message-ID"] = f"<ret{n}@example.org>"
    msg["Subject"] = f"Question {n}" if reply_to is None else "Re: Question"
    if reply_to:
        msg["In-Reply-To"] = reply_to
    msg.set_content(f"Body of message {n}, PURGEMARK{n}.\n")
    if n % 3 == 0:
        msg.add_attachment(
            f"attachment {n}".encode() * 40, maintype="application", subtype="pdf", filename="a.pdf"
        )
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def backdate(db: Path, ids: list[str], days: float) -> None:
    """The test clock: move messages' receive time into the past (a write the server sees)."""
    conn = sqlite3.connect(db, timeout=10)
    with conn:
        conn.executemany(
            "UPDATE messages SET received_at = received_at - ? WHERE id = ?",
            [(days * DAY, i) for i in ids],
        )
    conn.close()


def state(db: Path) -> dict[str, dict[str, Any]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    out = {
        r["id"]: dict(r)
        for r in conn.execute(
            "SELECT m.id, m.purged, m.envelope IS NOT NULL AS has_env, r.id IS NOT NULL AS has_raw"
            " FROM messages m LEFT JOIN message_raw r ON r.id = m.id"
        )
    }
    conn.close()
    return out


def test_purger_runs_while_serving_and_tombstones_keep_dedup_and_threads(
    mailgate_server: Any,
) -> None:
    srv = mailgate_server(extra_toml=RETENTION)
    with srv.smtp() as client:
        for n in range(12):
            client.sendmail("carol@example.org", [SUPPORT], message(n))
        client.sendmail("dave@example.org", ["help@acme.support.example.test"], message(100))
    rows = srv.wait_processed(13)
    ids = [r["id"] for r in rows]
    old, middle, acme = ids[:6], ids[6:9], ids[12]
    threads = {json.loads(r["envelope"])["thread"]["id"] for r in rows[:6]}
    db = srv.data_dir / "mailgate.sqlite"
    backdate(db, [*old, acme], 40)  # past every envelope retention, except acme's (forever)
    backdate(db, middle, 10)  # past raw and attachments, not envelopes

    # mail keeps coming while the purger works through its batches of 4
    sent: list[str] = []
    errors: list[BaseException] = []

    def keep_sending() -> None:
        try:
            with smtplib.SMTP(srv.smtp_host, srv.smtp_port, timeout=30) as c:
                for n in range(200, 240):
                    c.sendmail("erin@example.org", [SUPPORT], message(n, sender="erin@example.org"))
                    sent.append(str(n))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    sender = threading.Thread(target=keep_sending)
    sender.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = state(db)
        if all(i not in now for i in old) and all(not now[i]["has_raw"] for i in middle):
            break
        time.sleep(0.2)
    sender.join(timeout=60)
    assert not errors and len(sent) == 40
    now = state(db)
    assert all(i not in now for i in old), "the 40-day-old messages are gone"
    for i in middle:  # raw and attachments gone, the envelope kept
        assert now[i]["has_env"] and not now[i]["has_raw"]
        assert "raw" in now[i]["purged"] and "attachments" in now[i]["purged"]
    assert now[acme]["has_raw"] and now[acme]["has_env"]  # the tenant rule: kept forever
    for i in ids[9:12]:
        assert now[i]["has_raw"] and now[i]["purged"] == ""
    assert len(srv.wait_processed(53 - 6)) == 53 - 6
    assert "retention purge" in srv.log()

    # tombstones: the resent message 0 is a duplicate of the purged original; a reply to a
    # purged message joins its thread
    with srv.smtp() as client:
        client.sendmail("carol@example.org", [SUPPORT], message(0))
        client.sendmail("carol@example.org", [SUPPORT], message(300, reply_to="<ret1@example.org>"))
    rows = srv.wait_processed(55 - 6)
    envs = [json.loads(r["envelope"]) for r in rows[-2:]]
    by_mid = {e["messageId"].strip("<>"): e for e in envs}
    dup = by_mid["ret0@example.org"]
    assert dup["duplicateOf"] == old[0]
    reply = by_mid["ret300@example.org"]
    assert reply["thread"]["id"] in threads
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    senders = conn.execute(
        f"SELECT sender FROM thread_messages WHERE msg_id IN ({','.join('?' * 6)})", old
    ).fetchall()
    conn.close()
    assert senders and all(s == ("",) for s in senders)  # tombstones hold no address
    raw_bytes = db.read_bytes() + (srv.data_dir / "mailgate.sqlite-wal").read_bytes()
    for n in range(1, 6):  # whole messages purged (0 came again): no byte of their body left
        assert f"PURGEMARK{n}.".encode() not in raw_bytes


def test_purge_cli_dry_run_before_and_summary(mailgate_server: Any) -> None:
    srv = mailgate_server()
    with srv.smtp() as client:
        for n in range(6):
            client.sendmail("carol@example.org", [SUPPORT], message(n))
    rows = srv.wait_processed(6)
    db = srv.data_dir / "mailgate.sqlite"
    backdate(db, [r["id"] for r in rows[:4]], 400)
    cutoff = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 200 * DAY))
    dry = json.loads(srv.cli("purge", "--before", cutoff, "--dry-run", "--json").stdout)
    assert dry["dry_run"] is True and dry["messages"] == 4
    assert len(state(db)) == 6
    out = srv.cli("purge", "--before", cutoff).stdout.decode()
    assert "whole messages (tombstones kept for dedup/threads): 4" in out
    assert "attachment files: 2" in out  # messages 0 and 3 had one each
    assert sorted(state(db)) == sorted(r["id"] for r in rows[4:])
    again = json.loads(srv.cli("purge", "--before", cutoff, "--json").stdout)
    assert again["messages"] == 0
    vacuumed = json.loads(srv.cli("purge", "--vacuum", "--json").stdout)  # while serving
    assert "VACUUM done: auto_vacuum is INCREMENTAL from now on" in vacuumed["notes"]
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    bad = srv.cli("purge", "--before", "last tuesday", check=False)
    assert bad.returncode != 0 and b"a date like" in bad.stderr
