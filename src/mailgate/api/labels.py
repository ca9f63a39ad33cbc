"""``POST /v1/messages/{id}/label``: an agent's correction is a label for the routing model.

The body is ``{"queue": "billing", "tags": ["vip"]}``; the message is looked up in the token's
tenant only (another tenant's message is 404, as everywhere under ``/v1/messages``). The label
replaces an earlier one of the same message and is what ``mailgate model train --from-store``
learns from (issue 17).
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from mailgate.api.common import NAME_PATTERN, error, json_response, rfc3339
from mailgate.api.messages import STORE, principal
from mailgate.store.base import NotFound
from mailgate.store.models import ModelStore

MAX_NAME = 100
MAX_TAGS = 50
LABELS: web.AppKey[ModelStore] = web.AppKey("labels", ModelStore)  # type: ignore[type-abstract]


_NAME = re.compile(NAME_PATTERN)


def _valid_name(value: Any) -> bool:
    if not isinstance(value, str) or _NAME.fullmatch(value) is None:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a "\udXXX" JSON escape
        return False
    return True


def parse_label(body: Any) -> tuple[str, tuple[str, ...]] | str:
    """(queue, tags) from a request body, or what is wrong with it."""
    if not isinstance(body, dict):
        return 'expected a JSON object {"queue": "…", "tags": […]}'
    unknown = sorted(set(body) - {"queue", "tags"})
    if unknown:
        return f"unknown field {unknown[0]!r}"
    queue = body.get("queue")
    if not _valid_name(queue):
        return f"queue: expected a name of 1 to {MAX_NAME} characters"
    tags = body.get("tags", [])
    if not isinstance(tags, list) or len(tags) > MAX_TAGS or not all(_valid_name(t) for t in tags):
        return f"tags: expected a list of at most {MAX_TAGS} names"
    return str(queue), tuple(dict.fromkeys(tags))


async def label_message(request: web.Request) -> web.Response:
    store = request.app[LABELS]
    events = request.app[STORE]
    who = principal(request)
    try:
        body = json.loads(await request.read())
    except ValueError:
        return error(400, "bad_body", "expected a JSON body")
    parsed = parse_label(body)
    if isinstance(parsed, str):
        return error(400, "bad_body", parsed)
    queue, tags = parsed
    try:
        ev = await events.get_event(who.tenant, request.match_info["id"])
        rec = await store.add_label(ev.msg_id, queue, tags, by=f"api:{who.name}")
    except NotFound:
        return error(404, "not_found", "no such message")
    return json_response(
        {
            "id": rec.msg_id,
            "queue": rec.queue,
            "tags": list(rec.tags),
            "labelledBy": rec.labelled_by,
            "labelledAt": rfc3339(rec.labelled_at),
        }
    )


def add_routes(app: web.Application, store: object) -> None:
    """Register the route when the store keeps labels (every SQLite store does)."""
    if isinstance(store, ModelStore):
        app[LABELS] = store
        app.router.add_post("/v1/messages/{id}/label", label_message)
