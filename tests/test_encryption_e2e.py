"""Encryption at rest (issue 15) through a real ``serve``: with a key, a planted card number, a
body marker and an attachment marker are in no file under the data dir, while the API still
returns them; the key is rotated and everything reads back under the new one; a flipped
ciphertext byte gets the message quarantined with reason ``integrity`` and serving goes on."""

from __future__ import annotations

import gc
import json
import re
import sqlite3
import time
import urllib.request
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from tests.support.dns_server import DnsTestServer, dns_server
from tests.support.smtp_sink import SmtpSink, smtp_sink

__all__ = ["dns_server", "smtp_sink"]

TOKEN = "test-token-0123456789abcdef0123456789"  # tests/support/server.py BASE_TOML
CARD = "4111 1111 1111 1111"
PLANTED = [
    CARD.encode(),
    CARD.replace(" ", "").encode(),
    b"BODYMARKER-zx9",
    b"ATTACHMARKER-qq7",
    b"enc-1@example.org",  # a Message-ID: keyed hashes in the dedup and thread indexes
    # the person: envelope sender, From and its display name (messages' columns, the envelope,
    # thread contacts and participants, the reply outbox), and the subject
    b"pat@example.org",
    b"Pat Customer",
    b"Refund please",
]


def planted_message() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Pat Customer <pat@example.org>"
    msg["To"] = "support@example.test"
    msg["Subject"] = "Refund please"
    msg["Message-ID"] = "<enc-1@example.org>"
    msg.set_content(f"Please refund BODYMARKER-zx9. Card {CARD}, CVV 123, exp 12/29.\n")
    msg.add_attachment(
        b"receipt ATTACHMARKER-qq7 " * 50, maintype="text", subtype="plain", filename="r.txt"
    )
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def files_with(root: Path, needles: list[bytes]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        hits = [n.decode() for n in needles if re.search(re.escape(n), data, re.IGNORECASE)]
        if hits:
            found[str(path.relative_to(root))] = hits
    return found


def api_get(srv: Any, path: str) -> bytes:
    req = urllib.request.Request(srv.api_base + path, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        body: bytes = resp.read()
        return body


def test_encrypted_at_rest_rotation_and_integrity(
    mailgate_server: Any, smtp_sink: SmtpSink, dns_server: DnsTestServer, tmp_path: Path
) -> None:
    # SPF passes for the sender's domain: its result names the envelope sender (mailFrom)
    dns_server.add_txt("example.org", "v=spf1 ip4:127.0.0.1 -all")
    auth = f'nameservers = ["{dns_server.address}"]\ntimeout = "500ms"\nbudget = "3s"'
    keys = tmp_path / "keys-outside-data-dir"
    keys.mkdir()
    k1, k2 = keys / "k1", keys / "k2"
    reply = (  # acknowledgements on: the reply outbox holds the person's address too
        f'[reply]\nenabled = true\nsmarthost = "{smtp_sink.address}"\n'
        'from = "Example Support <support@example.test>"\nretry_schedule = "0s, 100ms*50"\n'
    )
    srv = mailgate_server(
        extra_toml=reply, auth=True, auth_extra=auth
    )  # makes the config; restarted below with the key
    srv.cli("keys", "new-encryption-key", str(k1))
    srv.cli("keys", "new-encryption-key", str(k2))
    assert oct(k1.stat().st_mode & 0o777) == "0o600"
    again = srv.cli("keys", "new-encryption-key", str(k1), check=False)
    assert again.returncode != 0 and b"not overwritten" in again.stderr
    srv.stop()
    srv.env = {"MAILGATE_ENCRYPTION_KEY": k1.read_text().strip()}
    srv.start()
    raw = planted_message()
    srv.send(raw, mail_from="pat@example.org")
    srv.send(planted_message().replace(b"enc-1@", b"enc-2@"))
    rows = srv.wait_processed(2)
    msg_id = rows[-2]["id"]

    # the API and the worker see plain data ...
    detail = json.loads(api_get(srv, f"/v1/messages/{msg_id}"))
    assert "BODYMARKER-zx9" in detail["envelope"]["text"]
    assert detail["envelope"]["from"]["email"] == "pat@example.org"
    assert detail["envelope"]["spf"]["result"] == "pass"
    # ... and so do the listings that read the sealed columns (CLI and API)
    listed = json.loads(srv.cli("messages", "list", "--json").stdout)
    mine = [m for m in listed if m["id"] == msg_id]
    assert mine and mine[0]["mailFrom"] == "pat@example.org"
    assert mine[0]["subject"] == "Refund please"
    shown = json.loads(srv.cli("messages", "show", msg_id, "--json").stdout)
    assert "pat@example.org" in json.dumps(shown)
    assert api_get(srv, f"/v1/messages/{msg_id}/raw") == raw
    att_url = detail["envelope"]["attachments"][0]["url"]
    with urllib.request.urlopen(srv.api_base + att_url.split("8025", 1)[1], timeout=10) as r:
        assert b"ATTACHMARKER-qq7" in r.read()
    # dedup and threading work on the keyed hashes: a resend is a duplicate, a reply threads
    srv.send(raw)
    reply = raw.replace(
        b"Message-ID: <enc-1@example.org>",
        b"Message-ID: <enc-r@example.org>\r\nIn-Reply-To: <enc-1@example.org>",
    )
    srv.send(reply)
    later = srv.wait_processed(4)
    dup, answer = (json.loads(r["envelope"]) for r in later[-2:])
    assert dup["duplicateOf"] == msg_id
    answered = json.loads(api_get(srv, f"/v1/messages/{later[-1]['id']}"))["envelope"]
    assert answer["thread"]["id"] == detail["envelope"]["thread"]["id"]
    assert answered["inReplyTo"].strip("<>") == "enc-1@example.org"  # the API reads it plain
    assert answered["thread"]["matchedBy"] == "in-reply-to"

    # the acknowledgement went to the return path, opened from its sealed outbox row
    acks = [m for m in smtp_sink.wait_for(1) if "pat@example.org" in m.rcpt_tos]
    assert acks and b"Refund please" in acks[0].data
    with srv.db() as c:
        (queued,) = c.execute("SELECT COUNT(*) FROM reply_outbox").fetchone()
    assert queued >= 1

    # ... while no file in the data dir holds them (database, WAL, blobs, keys)
    assert files_with(srv.data_dir, PLANTED) == {}
    assert (srv.data_dir / "keys" / "data-keys.json").exists()
    check = srv.cli("check-config", "--json", check=False)
    assert b"encryption_key_file: not set" not in check.stdout

    # rotation: the data keys are re-wrapped, nothing else changes
    db = srv.data_dir / "mailgate.sqlite"
    srv.stop()
    before = db.read_bytes()
    out = srv.cli("keys", "rotate", "--old-key-file", str(k1), "--new-key-file", str(k2))
    assert b"re-wrapped 1 data key" in out.stdout
    assert db.read_bytes() == before
    srv.env = {"MAILGATE_ENCRYPTION_KEY": k2.read_text().strip()}
    srv.start()
    assert api_get(srv, f"/v1/messages/{msg_id}/raw") == raw
    assert json.loads(srv.cli("db", "check", "--json").stdout)["ok"] is True
    srv.env = {"MAILGATE_ENCRYPTION_KEY": k1.read_text().strip()}
    stale = srv.cli("db", "check", "--json", check=False)
    assert stale.returncode != 0 and b"does not open" in stale.stderr
    srv.env = {"MAILGATE_ENCRYPTION_KEY": k2.read_text().strip()}

    # a flipped ciphertext byte: the message goes to quarantine (integrity), serving goes on
    srv.stop()
    victim = rows[-1]["id"]
    # connections the helpers left open in this process would share a stale WAL index
    gc.collect()
    conn = sqlite3.connect(db)
    with conn:
        (sealed,) = conn.execute("SELECT raw FROM message_raw WHERE id = ?", (victim,)).fetchone()
        flipped = bytearray(sealed)
        flipped[-5] ^= 0x01
        conn.execute("UPDATE message_raw SET raw = ? WHERE id = ?", (bytes(flipped), victim))
        conn.execute("UPDATE messages SET state = 'spooled' WHERE id = ?", (victim,))
    conn.close()
    srv.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with srv.db() as c:
            q = c.execute("SELECT reason FROM quarantine WHERE msg_id = ?", (victim,)).fetchone()
        if q:
            break
        time.sleep(0.1)
    assert q is not None and q["reason"] == "integrity"
    srv.send(planted_message().replace(b"enc-1@", b"enc-3@"))  # still accepting and processing
    after = srv.wait_processed(5)
    assert {r["id"]: r["state"] for r in after}[victim] == "quarantined"
    assert "failed its integrity check" in srv.log()
    bad = json.loads(srv.cli("db", "check", "--json", check=False).stdout)
    assert any(victim in p and "authentication" in p for p in bad["problems"])
    srv.stop()
    assert files_with(srv.data_dir, PLANTED) == {}

    # erasure finds the sender's messages in an encrypted store (the tampered one included)
    erased = json.loads(srv.cli("erase", "--address", "pat@example.org", "--json").stdout)
    assert erased["messages"] == 5 and erased["residue"] == {}
    assert files_with(srv.data_dir, [b"pat@example.org", b"Pat Customer"]) == {}
