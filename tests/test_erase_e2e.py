"""Erasure on request (issue 15) through a real ``serve``: a person with 50 messages across two
tenants and threads is erased with ``DELETE /v1/subjects/{address}``; afterwards no byte of their
address, name, body or attachment is in any file under the data dir (SQLite pages, WAL, blob
store), the API answers 404 for their messages, other people's messages and a shared blob stay,
consumers get ``subject.erased`` and the audit log holds a keyed hash, not the address."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import smtplib
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.http_receiver import HttpReceiver

DEFAULT_TOKEN = "test-token-0123456789abcdef0123456789"  # tests/support/server.py BASE_TOML
ACME_TOKEN = "acme-token-0123456789abcdef0123456789ab"
ADMIN_TOKEN = "admin-token-0123456789abcdef0123456789"
ALICE = "Alice.Liddell@customer.example"
BOB = "bob.other@example.org"
SUPPORT = "support@example.test"
ACME = "help@acme.support.example.test"
SHARED = b"%PDF-1.4 shared price list " + bytes(range(256)) * 8
# What must be gone: the address (any case), the display name, body and attachment markers.
GONE = [b"alice.liddell@customer.example", b"Liddell", b"ALICEBODY", b"ALICEATTACH"]


def extra_toml(hook_url: str) -> str:
    return (
        f'[[api.tokens]]\ntoken = "{ACME_TOKEN}"\ntenant = "acme"\nname = "acme"\n\n'
        f'[[api.tokens]]\ntoken = "{ADMIN_TOKEN}"\ntenant = "default"\nname = "dpo"\n'
        "admin = true\n\n"
        f'[[webhooks]]\nname = "app"\nurl = "{hook_url}"\n'
        'secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]\ntenant = "default"\n'
        'events = ["message.received", "subject.erased"]\n\n'
        '[delivery]\npoll_interval = "100ms"\n'
    )


def message(
    sender: str,
    to: str,
    n: int,
    *,
    cc: str | None = None,
    reply_to_mid: str | None = None,
    body: str = "",
    attachment: bytes | None = None,
) -> tuple[str, bytes]:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    mid = f"<m{n}.{hashlib.sha1(sender.encode()).hexdigest()[:6]}@mail.example>"
    msg["Message-ID"] = mid
    msg["Subject"] = f"Order question {n}" if reply_to_mid is None else f"Re: Order question {n}"
    if reply_to_mid:
        msg["In-Reply-To"] = reply_to_mid
        msg["References"] = reply_to_mid
    msg.set_content(body or f"Message number {n}.\n")
    if attachment is not None:
        msg.add_attachment(attachment, maintype="application", subtype="pdf", filename=f"f{n}.pdf")
    return mid, msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def send_all(srv: Any, batch: list[tuple[str, list[str], bytes]]) -> None:
    with smtplib.SMTP(srv.smtp_host, srv.smtp_port, timeout=30) as client:
        for mail_from, rcpts, raw in batch:
            client.sendmail(mail_from, rcpts, raw)


def files_containing(root: Path, needles: list[bytes]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        hits = [n.decode() for n in needles if re.search(re.escape(n), data, re.IGNORECASE)]
        if hits:
            found[str(path.relative_to(root))] = hits
    return found


def build_mail() -> tuple[list[tuple[str, list[str], bytes]], int]:
    """Alice: 50 messages (threads of 5 in both tenants; 4 with attachments, one of them the
    blob Bob also sent; 5 where she is only a Cc recipient of Bob). Bob: 12 of his own, one a
    reply in one of Alice's threads."""
    alice_from = f"Alice Liddell <{ALICE}>"
    batch: list[tuple[str, list[str], bytes]] = []
    n = 0
    first_mids: list[str] = []
    for t, (to, count) in enumerate([(SUPPORT, 25), (ACME, 20)]):
        prev: str | None = None
        for i in range(count):
            n += 1
            att: bytes | None = None
            if i % 10 == 3:
                att = b"%PDF-1.4 ALICEATTACH receipt " + bytes([t, i]) * 64
            if i == 7 and t == 0:
                att = SHARED
            body = f"ALICEBODY {n}: my card ends 4242, I am Alice Liddell, order {n}.\n"
            mid, raw = message(
                alice_from,
                to,
                n,
                reply_to_mid=None if i % 5 == 0 else prev,
                body=body,
                attachment=att,
                cc=BOB if i == 0 else None,
            )
            prev = None if i % 5 == 4 else mid
            if i == 0:
                first_mids.append(mid)
            batch.append((ALICE, [to], raw))
    for k in range(5):  # Bob writes to support with Alice in Cc: names her as a recipient
        n += 1
        _, raw = message(BOB, SUPPORT, n, cc=alice_from, body=f"ALICEBODY cc {k}\n")
        batch.append((BOB, [SUPPORT], raw))
    alice_count = 50
    for k in range(12):  # Bob's own mail, kept
        n += 1
        reply = first_mids[0] if k == 0 else None
        att = SHARED if k == 1 else None
        _, raw = message(
            BOB,
            SUPPORT if k % 2 == 0 else ACME,
            n,
            reply_to_mid=reply,
            body=f"BOBBODY {k}\n",
            attachment=att,
        )
        batch.append((BOB, [SUPPORT if k % 2 == 0 else ACME], raw))
    return batch, alice_count


async def test_erase_a_data_subject_leaves_no_byte_behind(mailgate_server: Any) -> None:
    batch, alice_count = build_mail()
    async with HttpReceiver() as rx:
        srv = await asyncio.to_thread(mailgate_server, extra_toml=extra_toml(rx.url()))
        await asyncio.to_thread(send_all, srv, batch)
        rows = await asyncio.to_thread(srv.wait_processed, len(batch), 60.0)
        assert {r["tenant"] for r in rows} == {"default", "acme"}
        await rx.wait_for(1, timeout=30)
        with srv.db() as conn:
            assert conn.execute("SELECT COUNT(*) FROM threads").fetchone()[0] >= 9
        shared_sha = hashlib.sha256(SHARED).hexdigest()
        blob = srv.data_dir / "attachments" / shared_sha[:2] / shared_sha[2:4] / shared_sha
        assert blob.exists()
        assert files_containing(srv.data_dir, GONE)  # the planted data is there before

        bob_rows = [
            r for r in rows if r["mail_from"] == BOB and "ALICE" not in (r["envelope"] or "")
        ]
        assert len(bob_rows) == 12
        headers = {"default": DEFAULT_TOKEN, "acme": ACME_TOKEN}
        url = f"{srv.api_base}/v1/subjects/{ALICE}"
        async with aiohttp.ClientSession() as http:
            async with http.delete(url, headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"}) as r:
                assert r.status == 403  # a tenant's token is not an admin token
            async with http.delete(url) as r:
                assert r.status == 401
            admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            async with http.delete(url + "?dry_run=true", headers=admin) as r:
                assert r.status == 200
                dry = await r.json()
            assert dry["dry_run"] is True and dry["messages"] == alice_count
            assert files_containing(srv.data_dir, GONE)  # a dry run changes nothing
            async with http.delete(url, headers=admin) as r:
                assert r.status == 200, await r.text()
                report = await r.json()
            assert report["messages"] == alice_count
            assert report["tenants"] == ["acme", "default"]
            assert report["threads_deleted"] >= 8 and report["threads_updated"] >= 1
            assert report["blobs_deleted"] == 5  # Alice's own receipts; the shared one stays
            assert report["residue"] == {}, report["residue"]
            assert "alice" not in json.dumps(report).lower()

            # while serve still runs: the WAL was checkpointed and truncated
            assert files_containing(srv.data_dir, GONE) == {}
            assert blob.exists()

            erased = {r["id"]: r["tenant"] for r in rows if r["id"] in set(report["message_ids"])}
            assert len(erased) == alice_count
            for msg_id, tenant in erased.items():
                auth = {"Authorization": f"Bearer {headers[tenant]}"}
                async with http.get(f"{srv.api_base}/v1/messages/{msg_id}", headers=auth) as r:
                    assert r.status == 404
            for row in bob_rows:
                auth = {"Authorization": f"Bearer {headers[row['tenant']]}"}
                async with http.get(
                    f"{srv.api_base}/v1/messages/{row['id']}/raw", headers=auth
                ) as r:
                    assert r.status == 200
                    assert b"BOBBODY" in await r.read()

        # consumers are told which message ids to erase downstream (default tenant's target)
        got = await rx.wait_for(
            1, timeout=30, where=lambda q: q.header("x-mailgate-event-type") == "subject.erased"
        )
        notice = json.loads(got[0].body)
        assert notice["type"] == "subject.erased"
        assert notice["subjectHash"] == report["subject_hash"]
        assert set(notice["messageIds"]) == {i for i, t in erased.items() if t == "default"}
        assert b"alice" not in got[0].body.lower()

    # the thread Bob replied in survives, with Bob as its contact and without Alice
    with srv.db() as conn:
        for contact, participants in conn.execute("SELECT contact, participants FROM threads"):
            assert "alice" not in (contact + participants).lower()
        (target,) = conn.execute(
            "SELECT target FROM audit_log WHERE action = 'subject.erase'"
        ).fetchone()
    key = bytes.fromhex((srv.data_dir / "keys" / "subject-hash-key").read_text().strip())
    assert target == "hmac-sha256:" + hmac.new(key, ALICE.lower().encode(), "sha256").hexdigest()
    srv.stop()
    assert files_containing(srv.data_dir, GONE) == {}
    assert len(srv.rows()) == len(batch) - alice_count + 2  # + a notice per tenant


def test_erase_cli_dry_run_then_erase(mailgate_server: Any) -> None:
    srv = mailgate_server()
    batch = [
        (ALICE, [SUPPORT], message(f"Alice Liddell <{ALICE}>", SUPPORT, i, body="ALICEBODY\n")[1])
        for i in range(3)
    ] + [(BOB, [SUPPORT], message(BOB, SUPPORT, 9, body="BOBBODY\n")[1])]
    send_all(srv, batch)
    srv.wait_processed(len(batch))
    out = srv.cli("erase", "--address", ALICE.upper(), "--dry-run", "--json")
    assert json.loads(out.stdout)["messages"] == 3
    assert len(srv.rows()) == 4
    bad = srv.cli("erase", "--address", "%@customer.example", check=False)
    assert bad.returncode != 0 and b"one complete address" in bad.stderr
    out = srv.cli("erase", "--address", ALICE, "--tenant", "default")
    text = out.stdout.decode()
    assert "messages: 3" in text and "alice" not in text.lower()
    assert files_containing(srv.data_dir, GONE) == {}
    assert [r["mail_from"] for r in srv.rows() if r["state"] != "notice"] == [BOB]
