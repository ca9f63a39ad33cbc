"""The envelope is encoded once: webhook bodies and API responses reuse the stored JSON text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mailgate.api.messages import event_json, event_text
from mailgate.api.urls import AttachmentUrlSigner
from mailgate.config import ApiConfig
from mailgate.delivery.webhook import encode_payload, payload_for
from mailgate.store.delivery import EventRecord, OutboxItem
from mailgate.store.sqlite_base import dumps

PLAIN: dict[str, Any] = {
    "id": "msg_1",
    "subject": 'Grüße "attachments":[{ in a subject',
    "text": 'snow ☃ and a quote " and \\ backslash',
    "attachments": [],
    "forwarded": [{"attachments": []}],
    "score": 0.1,
}
WITH_ATT: dict[str, Any] = {
    "id": "msg_2",
    "attachments": [{"id": "att_1", "filename": "a.pdf", "url": None}],
}


def signer(tmp_path: Path) -> AttachmentUrlSigner:
    return AttachmentUrlSigner(ApiConfig(public_url="http://127.0.0.1:1"), tmp_path)


def item(env: dict[str, Any]) -> OutboxItem:
    return OutboxItem(
        id=1,
        event_id="evt_1",
        event_type="message.received",
        msg_id=str(env["id"]),
        tenant="default",
        target="t",
        ordering_key=None,
        attempts=0,
        client_errors=0,
        trace_id="trc",
        received_at=1.0,
        created_at=2.0,
        envelope_json=dumps(env),
    )


def record(env: dict[str, Any]) -> EventRecord:
    return EventRecord(
        seq=7,
        id="evt_1",
        msg_id=str(env["id"]),
        tenant="default",
        type="message.received",
        ordering_key=None,
        trace_id="trc",
        received_at=1.0,
        created_at=2.0,
        delivered_at=None,
        acked_at=None,
        acked_by=None,
        envelope_json=dumps(env),
        deliveries=[{"target": "t", "state": "pending", "attempts": 0, "last_status": None,
                     "last_error": None, "delivered_at": None, "next_attempt_at": 3.0}],
    )  # fmt: skip


def test_webhook_body_is_the_stored_text_when_nothing_is_signed(tmp_path: Path) -> None:
    it = item(PLAIN)
    body = payload_for(it, signer(tmp_path))
    assert body == it.envelope_json.encode("utf-8")
    assert body == encode_payload(PLAIN)  # the bytes the re-encoding path would have sent


def test_webhook_body_signs_attachment_urls(tmp_path: Path) -> None:
    body = payload_for(item(WITH_ATT), signer(tmp_path))
    sent = json.loads(body)
    assert sent["attachments"][0]["url"].startswith("http://127.0.0.1:1/")
    assert "sig=" in sent["attachments"][0]["url"]


def test_api_event_text_equals_event_json(tmp_path: Path) -> None:
    urls = signer(tmp_path)
    for env in (PLAIN, WITH_ATT):
        for detail in (False, True):
            ev = record(env)
            text = event_text(ev, urls, detail=detail)
            want = event_json(ev, urls, detail=detail)
            got = json.loads(text)
            if env is WITH_ATT:  # signed URLs carry their own expiry: compare the rest
                assert "sig=" in got["envelope"]["attachments"][0]["url"]
                got["envelope"]["attachments"][0]["url"] = want["envelope"]["attachments"][0][
                    "url"
                ] = None
            else:
                assert got["envelope"] == env
            assert got == want
            assert list(got) == list(want)  # same key order
