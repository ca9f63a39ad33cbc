"""No personal data in the logs (issue 15): an e2e ``serve`` run at debug level (accepted,
refused, processed, quarantined and redelivered mail, an erasure, a purge) is grepped line by
line for planted markers: bodies, subjects and full addresses are never logged."""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage
from pathlib import Path

import aiohttp

from tests.support.http_receiver import HttpReceiver, Reply
from tests.support.server import BASE_TOML, MailgateServer

ADMIN = "admin-token-0123456789abcdef0123456789"
SENDER = "planted.person@secret-domain.example"
MARKERS = [
    SENDER,
    "Planted Person",
    "SUBJMARK-81",
    "BODYMARK-52",
    "ATTMARK-33",
    "4111 1111 1111 1111",
    "4111111111111111",
]


def extra_toml(url: str) -> str:
    return (
        f'[[api.tokens]]\ntoken = "{ADMIN}"\ntenant = "default"\nname = "dpo"\nadmin = true\n\n'
        f'[[webhooks]]\nname = "app"\nurl = "{url}"\n'
        'secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]\n'
        'events = ["message.received", "subject.erased"]\n\n'
        '[delivery]\npoll_interval = "100ms"\n\n'
        '[[rules]]\nname = "hold-invoices"\nif = { subject = "/invoice/i" }\n'
        'then = { quarantine = "held-for-review" }\n'
    )


def message(n: int, subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Planted Person <{SENDER}>"
    msg["To"] = "support@example.test"
    msg["Subject"] = f"{subject} SUBJMARK-81"
    msg["Message-ID"] = f"<pii{n}@secret-domain.example>"
    msg.set_content(f"BODYMARK-52 my card 4111 1111 1111 1111 ({n})\n")
    msg.add_attachment(b"ATTMARK-33 " * 30, maintype="text", subtype="plain", filename="x.txt")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def debug_config(tmp_path: Path, url: str) -> str:
    base = BASE_TOML.format(
        data_dir=tmp_path / "data",
        auth="false",
        auth_extra="",
        workers=1,
        max_size="1MB",
        max_recipients=10,
        smtp_extra="",
    )
    return base.replace('level = "info"', 'level = "debug"') + "\n" + extra_toml(url)


async def test_no_body_subject_or_address_in_any_log_line(tmp_path: Path) -> None:
    async with HttpReceiver() as rx:
        rx.script(Reply(500), Reply(503))  # two failed attempts, each logged
        srv = MailgateServer(tmp_path, config_text=debug_config(tmp_path, rx.url()))
        await asyncio.to_thread(srv.start)
        try:

            def send() -> None:
                with smtplib.SMTP(srv.smtp_host, srv.smtp_port, timeout=30) as c:
                    c.sendmail(SENDER, ["support@example.test"], message(1, "Question"))
                    c.sendmail(SENDER, ["support@example.test"], message(2, "Your invoice"))
                    # the same message again: a duplicate
                    c.sendmail(SENDER, ["support@example.test"], message(1, "Question"))
                    try:
                        c.sendmail(SENDER, ["nobody@example.test"], message(3, "Lost"))
                    except smtplib.SMTPRecipientsRefused:
                        pass

            await asyncio.to_thread(send)
            await asyncio.to_thread(srv.wait_processed, 3)
            await rx.wait_for(2, timeout=30)  # the failed attempts (500, 503) are logged
            async with aiohttp.ClientSession() as http:
                url = f"{srv.api_base}/v1/subjects/{SENDER}"
                async with http.delete(url, headers={"Authorization": f"Bearer {ADMIN}"}) as r:
                    assert r.status == 200
            srv.cli("purge", "--before", "2999-01-01")
        finally:
            await asyncio.to_thread(srv.stop)
    log = srv.log_path.read_text(errors="replace")
    lines = log.splitlines()
    assert len(lines) > 20 and any("level=debug" in ln for ln in lines)
    assert any("quarantine" in ln for ln in lines) and any("erased" in ln for ln in lines)
    leaks = [(m, ln) for ln in lines for m in MARKERS if m.lower() in ln.lower()]
    assert leaks == [], leaks[:5]
