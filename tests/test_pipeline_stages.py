"""Intent detection, the scan's findings, entity extraction and masking."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pytest

from mailgate.pipeline.entities import build_entities, extract, luhn_valid, mask
from mailgate.pipeline.offline import MemoryPorts
from mailgate.pipeline.runner import PipelineRunner
from mailgate.pipeline.stages.intent import classify_intent
from tests.support.pipeline import make_config, make_env

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "rules"


# ------------------------------------------------------------------ intent


@pytest.mark.parametrize(
    ("name", "intent"),
    [
        ("billing-refund.eml", "human"),
        ("ooo-outlook.eml", "out-of-office"),
        ("bounce-dsn.eml", "bounce"),
        ("list-newsletter.eml", "list"),
        ("zendesk-ack.eml", "ticket-system-ack"),
        ("autoreply-rfc3834.eml", "auto-reply"),
    ],
)
async def test_intent_of_real_messages(name: str, intent: str) -> None:
    from mailgate.pipeline.offline import run_file

    env, _ = await run_file((FIXTURES / name).read_bytes(), make_config())
    assert env["intent"] == intent


@pytest.mark.parametrize(
    ("headers", "extra", "intent"),
    [
        ({"Auto-Submitted": "auto-replied"}, {}, "auto-reply"),
        ({"Auto-Submitted": "no"}, {}, "human"),
        ({"Auto-Submitted": "auto-generated"}, {}, "auto-reply"),
        ({"X-Autorespond": "yes"}, {}, "auto-reply"),
        ({"Precedence": "auto_reply"}, {}, "auto-reply"),
        ({"X-Auto-Response-Suppress": "All"}, {}, "auto-reply"),
        ({"List-Id": "<x.lists.test>"}, {}, "list"),
        ({"Precedence": "bulk"}, {}, "list"),
        ({"Auto-Submitted": "auto-replied", "Precedence": "bulk"}, {}, "auto-reply"),
        ({}, {"bounce": {"recipients": []}}, "bounce"),
        (
            {"Content-Type": "multipart/report; report-type=delivery-status; boundary=x"},
            {},
            "bounce",
        ),
        (
            {"Content-Type": "multipart/report; report-type=disposition-notification"},
            {},
            "auto-reply",
        ),
        ({"X-Mailgate-Loop": "mx.example.test"}, {}, "own-notification"),
    ],
)
def test_intent_signals(headers: dict[str, str], extra: dict[str, Any], intent: str) -> None:
    env = make_env(headers=headers, **extra)
    assert classify_intent(env)[0] == intent


def test_null_sender_and_own_address() -> None:
    assert classify_intent(make_env(mail_from=""))[0] == "auto-reply"
    dsn = make_env(
        mail_from="",
        sender="MAILER-DAEMON@mx.test",
        subject="Delivery Status Notification (Failure)",
    )
    assert classify_intent(dsn)[0] == "bounce"
    ooo = make_env(subject="Out of Office: back Monday")
    assert classify_intent(ooo)[0] == "out-of-office"
    vacation = make_env(
        subject="Re: order",
        text="I am currently out of the office",
        headers={"Auto-Submitted": "auto-replied"},
    )
    assert classify_intent(vacation)[0] == "out-of-office"
    # a human who happens to mention vacation is still human
    assert (
        classify_intent(make_env(subject="Booking my vacation", text="I'm on vacation next week"))[
            0
        ]
        == "human"
    )


async def test_own_notification_through_the_runner() -> None:
    cfg = make_config()
    runner = PipelineRunner(cfg, MemoryPorts())
    own = make_env(sender=cfg.reply.from_, subject="We received your message")
    await runner.process(own)
    assert own["intent"] == "own-notification"
    ours = make_env(sender="alerts@example.test", headers={"Auto-Submitted": "auto-generated"})
    await runner.process(ours)
    assert ours["intent"] == "own-notification"


def test_helpdesk_ack_needs_two_signals() -> None:
    human = make_env(subject="We have received your invoice, thanks")
    assert classify_intent(human)[0] == "human"
    ack = make_env(
        subject="Ticket #12345 has been created", headers={"Auto-Submitted": "auto-generated"}
    )
    assert classify_intent(ack)[0] == "ticket-system-ack"
    fresh = make_env(
        subject="Re: help",
        headers={"X-Freshdesk-Ticket": "55"},
        text="Your ticket has been created",
    )
    assert classify_intent(fresh)[0] == "ticket-system-ack"


# ------------------------------------------------------------------ scan


async def scan(
    attachments: list[dict[str, Any]], blobs: dict[str, bytes] | None = None, **env_kw: Any
) -> dict[str, Any]:
    ports = MemoryPorts()
    for data in (blobs or {}).values():
        ports.put(data)
    runner = PipelineRunner(make_config(), ports)
    env = make_env(attachments=attachments, **env_kw)
    await runner.process(env)
    return env


def att(
    name: str,
    sniffed: str | None = None,
    size: int = 1000,
    declared: str = "application/octet-stream",
    data: bytes | None = None,
) -> dict[str, Any]:
    import hashlib

    out: dict[str, Any] = {
        "filename": name,
        "contentType": declared,
        "detectedType": sniffed,
        "size": size,
    }
    if data is not None:
        out["sha256"] = hashlib.sha256(data).hexdigest()
        out["size"] = len(data)
    return out


@pytest.mark.parametrize(
    ("attachment", "reason"),
    [
        (att("report.pdf", "application/x-msdownload", declared="application/pdf"), "executable"),
        (att("tool", "application/x-executable"), "executable"),
        (att("invoice.pdf.exe"), "double-extension"),
        (att("photo\u202egpj.exe"), "double-extension"),
        (att("setup.scr"), "blocked-extension"),
        (att("budget.xlsm"), "macro"),
        (att("huge.pdf", "application/pdf", size=30 * 1024 * 1024), "oversize"),
    ],
)
async def test_scan_quarantine_reasons(attachment: dict[str, Any], reason: str) -> None:
    env = await scan([attachment])
    assert env["quarantine"]["reason"] == reason


async def test_clean_attachment_passes() -> None:
    env = await scan([att("invoice.pdf", "application/pdf", declared="application/pdf")])
    assert env["quarantine"] is None


async def test_sniffed_type_decides_not_the_name() -> None:
    # named .pdf, declared pdf, but the bytes are a Windows executable (MZ): sniffed from blobs
    data = b"MZ" + b"\x90" * 200
    env = await scan(
        [att("statement.pdf", None, declared="application/pdf", data=data)], {"x": data}
    )
    assert env["quarantine"]["reason"] == "executable"


async def test_archive_bomb_and_zipped_executable() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("zeros.txt", b"\0" * (20 * 1024 * 1024))
    bomb = buf.getvalue()
    env = await scan([att("data.zip", "application/zip", data=bomb)], {"b": bomb})
    assert env["quarantine"]["reason"] == "archive-bomb"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("readme.txt", b"hello")
        z.writestr("invoice.pdf.exe", b"MZ")
    zipped = buf.getvalue()
    env = await scan([att("docs.zip", "application/zip", data=zipped)], {"z": zipped})
    assert env["quarantine"]["reason"] == "double-extension"
    assert "docs.zip contains invoice.pdf.exe" in env["quarantine"]["detail"]


async def test_ooxml_with_vba_project_is_macro() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("[Content_Types].xml", b"<Types/>")
        z.writestr("word/vbaProject.bin", b"\xd0\xcf\x11\xe0")
    data = buf.getvalue()
    env = await scan(
        [
            att(
                "letter.docx",
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                data=data,
            )
        ],
        {"d": data},
    )
    assert env["quarantine"]["reason"] == "macro"


async def test_parse_limit_quarantines() -> None:
    env = await scan([], parseErrors=[{"code": "limit.parts", "message": "too many parts"}])
    assert env["quarantine"] == {"reason": "parse-limit", "detail": "limit.parts"}
    env = await scan([], parseErrors=[{"code": "defect.X", "message": "meh"}])
    assert env["quarantine"] is None


async def test_allowlist_by_sniffed_type() -> None:
    import dataclasses

    cfg = make_config()
    cfg = dataclasses.replace(
        cfg,
        pipeline=dataclasses.replace(cfg.pipeline, allowed_types=["image/*", "application/pdf"]),
    )
    runner = PipelineRunner(cfg, MemoryPorts())
    env = make_env(attachments=[att("a.png", "image/png"), att("b.bin", "application/x-sqlite3")])
    await runner.process(env)
    assert env["quarantine"]["reason"] == "blocked-type"
    assert "b.bin" in env["quarantine"]["detail"]


# ------------------------------------------------------------------ entities


def test_default_entities() -> None:
    patterns = build_entities(make_config().pipeline)
    env = make_env(
        subject="Re: [Ticket T-1042] Order #123456 and invoice INV-2024-001",
        text="Our PO-12345 and order number: 998877. Invoice #4721. Card 4111-1111-1111-1111, not 4111 1111 1111 1112.",
    )
    found = extract(env, patterns)
    assert found["orderId"] == ["123456", "998877"]
    assert found["poNumber"] == ["PO-12345"]
    assert found["invoiceId"] == ["INV-2024-001", "4721"]
    assert found["ticketId"] == ["T-1042"]
    assert found["cardNumber"] == ["****-****-****-1111"]  # only the Luhn-valid one, masked
    assert mask(env, patterns) == 1  # replyText is the same text: masked with it
    assert env["replyText"] == env["text"]
    assert "4111-1111-1111-1111" not in env["text"] and "****-****-****-1111" in env["text"]
    assert "4111 1111 1111 1112" in env["text"]  # not a card number: left alone


def test_luhn() -> None:
    assert luhn_valid("4111111111111111")
    assert luhn_valid("378282246310005")
    assert not luhn_valid("4111111111111112")
    assert not luhn_valid("1234")


async def test_card_numbers_masked_in_text_and_reply_text_and_entities() -> None:
    runner = PipelineRunner(make_config(), MemoryPorts())
    env = make_env(text="my card: 5555 5555 5555 4444 thanks")
    env["html"] = "<p>my card: 5555 5555 5555 4444</p>"
    out = await runner.process(env)
    for f in ("text", "replyText", "html"):
        assert "5555 5555 5555 4444" not in env[f]
    assert env["entities"]["cardNumber"] == ["**** **** **** 4444"]
    assert all("5555 5555" not in r for s in out.results for r in s.reasons)


def test_configured_entities_override_and_disable() -> None:
    import dataclasses

    from mailgate.config import EntityConfig

    cfg = make_config()
    pipeline = dataclasses.replace(
        cfg.pipeline,
        entities=[
            EntityConfig(name="sku", pattern=r"/\bSKU-(\d+)\b/i"),
            EntityConfig(name="poNumber", pattern=""),
        ],
    )
    patterns = build_entities(pipeline)
    found = extract(make_env(subject="sku-77 and PO-12345"), patterns)
    assert found == {"sku": ["77"]}


def test_masking_when_reply_text_differs_from_text() -> None:
    patterns = build_entities(make_config().pipeline)
    env = make_env(text="Thanks!\n\n> my card 4111 1111 1111 1111\n")
    env["replyText"] = "Thanks!"
    mask(env, patterns)
    assert "4111 1111 1111 1111" not in env["text"] and env["replyText"] == "Thanks!"
    odd = make_env(text="no numbers here")
    odd["replyText"] = "card 5555-5555-5555-4444"  # not a part of text: scanned on its own
    assert mask(odd, patterns) == 1
    assert odd["replyText"] == "card ****-****-****-4444"


async def test_loop_header_ours_or_another_systems() -> None:
    runner = PipelineRunner(make_config(), MemoryPorts())
    ours = make_env(headers={"X-Mailgate-Loop": "example.test", "Auto-Submitted": "auto-replied"})
    await runner.process(ours)
    assert ours["intent"] == "own-notification"
    theirs = make_env(headers={"X-Mailgate-Loop": "vendor.test", "Auto-Submitted": "auto-replied"})
    await runner.process(theirs)
    assert theirs["intent"] == "ticket-system-ack"
    xloop = make_env(headers={"X-Loop": "support@example.test"})
    await runner.process(xloop)
    assert xloop["intent"] == "own-notification"
