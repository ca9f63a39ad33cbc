"""The polling API: ``/v1/messages`` (cursor + ack), one message, its raw MIME.

The list is the tenant's event log in order, without the events already consumed (acked here,
or delivered by a webhook): the same events and ids the webhook pushes. ``next_cursor`` is
opaque to clients; passing it back returns what comes after. ``{id}`` is the message id
(``msg_…``) or the event id (``evt_…``). Every lookup is scoped to the token's tenant, so
another tenant's message is simply 404.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from mailgate.api.auth import Principal
from mailgate.api.common import ApiStore, dumps, error, json_response, rfc3339
from mailgate.api.urls import AttachmentUrlSigner
from mailgate.store.base import NotFound
from mailgate.store.delivery import EventRecord

DEFAULT_LIMIT = 50
MAX_LIMIT = 500

STORE: web.AppKey[ApiStore] = web.AppKey("store", ApiStore)  # type: ignore[type-abstract]
URLS: web.AppKey[AttachmentUrlSigner] = web.AppKey("urls", AttachmentUrlSigner)
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def event_json(
    ev: EventRecord, urls: AttachmentUrlSigner, *, detail: bool = False, envelope: bool = True
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": ev.msg_id,
        "eventId": ev.id,
        "type": ev.type,
        "cursor": str(ev.seq),
        "createdAt": rfc3339(ev.created_at),
        "receivedAt": rfc3339(ev.received_at),
        "acked": ev.acked_at is not None,
        "ackedAt": rfc3339(ev.acked_at),
        "ackedBy": ev.acked_by,
        "deliveredAt": rfc3339(ev.delivered_at),
        "traceId": ev.trace_id or None,
    }
    if envelope:
        out["envelope"] = urls.sign_envelope(ev.envelope)
    if detail:
        out["deliveries"] = [
            {
                "target": d["target"],
                "state": d["state"],
                "attempts": d["attempts"],
                "lastStatus": d["last_status"],
                "lastError": d["last_error"],
                "deliveredAt": rfc3339(d["delivered_at"]),
                "nextAttemptAt": rfc3339(d["next_attempt_at"]) if d["state"] == "pending" else None,
            }
            for d in ev.deliveries
        ]
    return out


_SLOT = "\x00mailgate-envelope-slot\x00"
_SLOT_JSON = dumps(_SLOT)


def envelope_text(ev: EventRecord, urls: AttachmentUrlSigner) -> str:
    """The event's envelope as JSON text: the stored text itself unless attachment URLs must
    be signed (an attachment is always an object, so without ``"attachments":[{`` there are
    none); then decoded, signed and encoded again."""
    text = ev.envelope_json or "{}"
    if '"attachments":[{' not in text:
        return text
    return dumps(urls.sign_envelope(ev.envelope))


def event_text(ev: EventRecord, urls: AttachmentUrlSigner, *, detail: bool = False) -> str:
    """`event_json` as JSON text, with the stored envelope spliced in rather than decoded and
    encoded again (the same bytes: the store and the API encode JSON alike)."""
    out = event_json(ev, urls, detail=detail, envelope=False)
    out["envelope"] = _SLOT
    if detail:  # keep the key order of event_json: envelope before deliveries
        out["deliveries"] = out.pop("deliveries")
    return dumps(out).replace(_SLOT_JSON, envelope_text(ev, urls), 1)


def _json_text_response(text: str) -> web.Response:
    try:
        body = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (never in stored text): \u-escape it
        return json_response(json.loads(text))
    return web.Response(body=body, content_type="application/json")


async def list_messages(request: web.Request) -> web.Response:
    store, urls = request.app[STORE], request.app[URLS]
    cursor_text = request.query.get("cursor", "")
    limit_text = request.query.get("limit", str(DEFAULT_LIMIT))
    if cursor_text and not cursor_text.isdigit():
        return error(400, "bad_cursor", "cursor must be a value returned as next_cursor")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_LIMIT:
        return error(400, "bad_limit", f"limit must be an integer from 1 to {MAX_LIMIT}")
    after = int(cursor_text) if cursor_text else 0
    limit = int(limit_text)
    if after > 2**62:
        return error(400, "bad_cursor", "cursor must be a value returned as next_cursor")
    # one more than asked tells whether another page follows
    events = await store.list_events(principal(request).tenant, after_seq=after, limit=limit + 1)
    page = events[:limit]
    next_cursor = str(page[-1].seq) if page else (cursor_text or None)
    tail = dumps({"next_cursor": next_cursor, "has_more": len(events) > limit})
    items = ",".join(event_text(ev, urls) for ev in page)
    return _json_text_response('{"data":[' + items + "]," + tail[1:])


async def get_message(request: web.Request) -> web.Response:
    store, urls = request.app[STORE], request.app[URLS]
    try:
        ev = await store.get_event(principal(request).tenant, request.match_info["id"])
    except NotFound:
        return error(404, "not_found", "no such message")
    return _json_text_response(event_text(ev, urls, detail=True))


async def ack_message(request: web.Request) -> web.Response:
    store = request.app[STORE]
    who = principal(request)
    try:
        ev = await store.ack_event(who.tenant, request.match_info["id"], by=f"api:{who.name}")
    except NotFound:
        return error(404, "not_found", "no such message")
    return json_response(
        {
            "id": ev.msg_id,
            "eventId": ev.id,
            "acked": True,
            "ackedAt": rfc3339(ev.acked_at),
            "ackedBy": ev.acked_by,
        }
    )


async def get_raw(request: web.Request) -> web.StreamResponse:
    store = request.app[STORE]
    try:
        ev = await store.get_event(principal(request).tenant, request.match_info["id"])
        raw = await store.get_raw(ev.msg_id)
    except NotFound:
        return error(404, "not_found", "no such message")
    # RFC 2046 §5.2.1: the exact bytes as accepted, CRLF and 8-bit data untouched
    return web.Response(
        body=raw,
        content_type="message/rfc822",
        headers={"Content-Disposition": f'attachment; filename="{ev.msg_id}.eml"'},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/messages", list_messages)
    app.router.add_get("/v1/messages/{id}", get_message)
    app.router.add_post("/v1/messages/{id}/ack", ack_message)
    app.router.add_get("/v1/messages/{id}/raw", get_raw)
