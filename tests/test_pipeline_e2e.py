"""The pipeline end to end: real ``mailgate serve``, real SMTP, the quarantine CLI.

Every quarantine reason the scan, the rules and the parser limits produce is sent through one
server (DMARC's is covered with a real DNS zone in ``test_auth_e2e.py``); then an operator
lists, shows, releases and deletes through ``mailgate quarantine`` and reads the audit log.
The same server shows dedup, the multi-inbox CC case, threading and tenant isolation.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import pytest

from tests.support.dns_server import dns_server
from tests.support.server import MailgateServer

__all__ = ["dns_server"]

pytestmark = pytest.mark.slow

Factory = Callable[..., MailgateServer]

EXTRA = """
[pipeline]
max_attachment_size = "64KB"

[[webhooks]]
url = "http://127.0.0.1:9/default"
secrets = ["whsec_FJaOVz3OfAZ89vzs08yza2c+TdAULNLHr7kLwQ/gpEQ="]
name = "default-hook"
tenant = "default"

[[webhooks]]
url = "http://127.0.0.1:9/acme"
secrets = ["whsec_FJaOVz3OfAZ89vzs08yza2c+TdAULNLHr7kLwQ/gpEQ="]
name = "acme-hook"
tenant = "acme"

[[rules]]
name = "legal"
if.any = [{ subject = "/subpoena|court order/i" }]
then = { quarantine = "legal-review", tags = ["legal"] }

[[rules]]
name = "billing"
if.any = [{ subject = "/invoice|refund|billing/i" }, { to = "billing@" }]
then = { queue = "billing", tags = ["billing"], priority = "high" }
"""


def mail(
    subject: str,
    *,
    attachments: list[tuple[str, bytes, str]] = (),  # type: ignore[assignment]
    message_id: str | None = None,
    to: str = "support@example.test",
    cc: str | None = None,
    sender: str = "customer@example.org",
    in_reply_to: str | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Customer <{sender}>"
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Date"] = "Thu, 23 Apr 2026 10:31:58 +0000"
    if message_id:
        msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    msg.set_content("Hello, please see the attachment.\n")
    for name, data, ctype in attachments:
        maintype, subtype = ctype.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes()


def zip_bytes(members: dict[str, bytes], deflate: bool = True) -> bytes:
    buf = io.BytesIO()
    mode = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", mode) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def many_parts(n: int) -> bytes:
    parts = "".join(f"--b\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n" for i in range(n))
    return (
        "From: customer@example.org\r\nTo: support@example.test\r\nSubject: parts\r\n"
        "Message-ID: <parts@example.org>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + parts + "--b--\r\n"
    ).encode()


CASES: dict[str, bytes] = {
    "executable": mail(
        "Statement",
        attachments=[("statement.pdf", b"MZ\x90\x00" + b"\x00" * 300, "application/pdf")],
    ),
    "double-extension": mail(
        "Invoice copy", attachments=[("invoice.pdf.exe", b"hello", "application/octet-stream")]
    ),
    "macro": mail(
        "Budget",
        attachments=[
            ("budget.xlsm", zip_bytes({"xl/vbaProject.bin": b"x"}), "application/octet-stream")
        ],
    ),
    "oversize": mail(
        "Big scan", attachments=[("scan.pdf", b"%PDF-1.4\n" + b"0" * 100_000, "application/pdf")]
    ),
    "archive-bomb": mail(
        "Logs",
        attachments=[
            ("logs.zip", zip_bytes({"zeros.log": b"\0" * (30 * 1024 * 1024)}), "application/zip")
        ],
    ),
    "legal-review": mail("Court order for account 42"),
    "parse-limit": many_parts(700),
}


def by_subject(srv: MailgateServer) -> dict[str, dict[str, Any]]:
    return {e["subject"]: e for e in srv.envelopes()}


def test_quarantine_reasons_and_operator_cli(mailgate_server: Factory) -> None:
    srv = mailgate_server(extra_toml=EXTRA, max_size="10MB")
    ids: dict[str, str] = {}
    for _reason, raw in CASES.items():
        srv.send(raw)
    clean = mail("Refund for invoice #4721", message_id="<clean@example.org>")
    srv.send(clean)
    rows = srv.wait_processed(len(CASES) + 1)
    states = {r["subject"]: r["state"] for r in rows}
    envs = srv.envelopes()
    for env in envs:
        if env["quarantine"]:
            ids[env["quarantine"]["reason"]] = env["id"]
    assert set(ids) == set(CASES), {e["subject"]: e["quarantine"] for e in envs}
    assert states["Refund for invoice #4721"] == "processed"
    assert sum(1 for s in states.values() if s == "quarantined") == len(CASES)

    listed = json.loads(srv.cli("quarantine", "list", "--json").stdout)
    assert {m["reason"] for m in listed} == set(CASES)
    only = json.loads(srv.cli("quarantine", "list", "--json", "--reason", "macro").stdout)
    assert [m["id"] for m in only] == [ids["macro"]]
    shown = json.loads(srv.cli("quarantine", "show", ids["executable"], "--json").stdout)
    assert "statement.pdf" in shown["detail"] and shown["size"] > 300
    with srv.db() as conn:
        held_events = conn.execute(
            "SELECT COUNT(*) FROM events WHERE msg_id IN ({})".format(",".join("?" * len(ids))),
            list(ids.values()),
        ).fetchone()[0]
    assert held_events == 0  # nothing quarantined was delivered

    released = json.loads(
        srv.cli("quarantine", "release", ids["legal-review"], "--actor", "olga", "--json").stdout
    )
    assert released["delivered"] and released["targets"] == ["default-hook"]
    srv.cli("quarantine", "delete", ids["archive-bomb"], "--actor", "olga")
    with srv.db() as conn:
        state = conn.execute(
            "SELECT state FROM messages WHERE id = ?", (ids["legal-review"],)
        ).fetchone()[0]
        events = conn.execute(
            "SELECT COUNT(*) FROM events WHERE msg_id = ?", (ids["legal-review"],)
        ).fetchone()[0]
        gone = conn.execute(
            "SELECT COUNT(*) FROM messages WHERE id = ?", (ids["archive-bomb"],)
        ).fetchone()[0]
    assert (state, events, gone) == ("processed", 1, 0)
    audit = json.loads(srv.cli("audit", "list", "--json").stdout) if _has_audit(srv) else None
    if audit is not None:
        assert [(a["action"], a["actor"]) for a in audit][:2] == [
            ("quarantine.delete", "olga"),
            ("quarantine.release", "olga"),
        ]
    bad = srv.cli("quarantine", "release", ids["legal-review"], check=False)
    assert bad.returncode == 1 and b"not quarantined" in bad.stderr


def _has_audit(srv: MailgateServer) -> bool:
    return srv.cli("audit", "--help", check=False).returncode == 0


def test_dedup_cc_threading_and_tenants(mailgate_server: Factory) -> None:
    srv = mailgate_server(extra_toml=EXTRA)
    first = mail("Printer broken", message_id="<p1@example.org>")
    srv.send(first)
    # the same message again (a sender retrying after a lost 250): a duplicate
    srv.send(first)
    # one transaction to three of our inboxes: one message, one event, three recipients
    cc = mail(
        "Billing and security",
        message_id="<cc@example.org>",
        to="support@example.test",
        cc="billing@example.test, security@example.test",
    )
    rcpts = ["support@example.test", "billing@example.test", "security@example.test"]
    srv.send(cc, rcpt_to=rcpts)
    # the customer's reply threads onto the first message
    srv.send(
        mail("Re: Printer broken", message_id="<p2@example.org>", in_reply_to="<p1@example.org>")
    )
    # another tenant's mail goes to that tenant's webhook only
    srv.send(
        mail("Hello acme", message_id="<a1@example.org>", to="help@acme.support.example.test"),
        rcpt_to=["help@acme.support.example.test"],
    )
    srv.wait_processed(5)
    envs = srv.envelopes()
    firsts = [e for e in envs if e["subject"] == "Printer broken"]
    assert firsts[0]["duplicateOf"] is None and firsts[1]["duplicateOf"] == firsts[0]["id"]
    multi = next(e for e in envs if e["subject"] == "Billing and security")
    assert multi["envelope"]["rcptTo"] == rcpts
    assert multi["queue"] == "billing"
    reply = next(e for e in envs if e["subject"] == "Re: Printer broken")
    assert reply["thread"]["id"] == firsts[0]["thread"]["id"]
    assert reply["thread"]["matchedBy"] == "in-reply-to" and reply["thread"]["isReply"] is True
    acme = next(e for e in envs if e["subject"] == "Hello acme")
    assert acme["tenant"] == "acme"
    with srv.db() as conn:
        per_msg = dict(
            conn.execute("SELECT msg_id, COUNT(*) FROM events GROUP BY msg_id").fetchall()
        )
        targets = conn.execute(
            "SELECT o.target FROM outbox o JOIN events e ON e.id = o.event_id WHERE e.msg_id = ?",
            (acme["id"],),
        ).fetchall()
        multi_targets = conn.execute(
            "SELECT o.target FROM outbox o JOIN events e ON e.id = o.event_id WHERE e.msg_id = ?",
            (multi["id"],),
        ).fetchall()
    assert firsts[1]["id"] not in per_msg  # the duplicate was not delivered
    assert per_msg[multi["id"]] == 1
    assert [t[0] for t in targets] == ["acme-hook"]
    assert [t[0] for t in multi_targets] == ["default-hook"]


def test_dmarc_quarantine_through_serve_and_release(
    mailgate_server: Factory, dns_server: Any
) -> None:
    """DMARC p=reject with ``dmarc_enforce = "quarantine"``: held as ``dmarc``; released by CLI."""
    dns_server.add_txt("example.com", "v=spf1 ip4:192.0.2.0/24 -all")  # not 127.0.0.1
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    auth_extra = (
        f'nameservers = ["{dns_server.address}"]\ntimeout = "500ms"\ndmarc_enforce = "quarantine"'
    )
    srv = mailgate_server(extra_toml=EXTRA, auth=True, auth_extra=auth_extra)
    spoof = mail(
        "Wire the refund today", sender="ceo@example.com", message_id="<spoof@attacker.example>"
    )
    srv.send(spoof, mail_from="billing@attacker.example")
    (row,) = srv.wait_processed(1)
    assert row["state"] == "quarantined"
    (held,) = json.loads(srv.cli("quarantine", "list", "--json", "--reason", "dmarc").stdout)
    assert held["id"] == row["id"]
    released = json.loads(srv.cli("quarantine", "release", row["id"], "--json").stdout)
    assert released["delivered"] is True and released["queue"] == "billing"
