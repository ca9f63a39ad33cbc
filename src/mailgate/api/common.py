"""Shared bits of the API handlers: JSON errors, timestamps, the store they need, app keys."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import web

from mailgate import jsontext
from mailgate.store.delivery import DeliveryStore


class ApiStore(DeliveryStore, Protocol):
    """The store the API needs: the event log plus raw bytes and a liveness probe."""

    async def get_raw(self, msg_id: str) -> bytes: ...

    async def ping(self) -> bool: ...


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


dumps = jsontext.dumps  # the one compact encoder (orjson): see mailgate.jsontext


def json_response(value: Any, *, status: int = 200) -> web.Response:
    try:
        body = dumps(value).encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from a broken charset: \u-escape them
        body = json.dumps(value, separators=(",", ":"), default=str).encode("ascii")
    return web.Response(body=body, status=status, content_type="application/json")


def error(status: int, code: str, message: str, **headers: str) -> web.Response:
    resp = json_response({"error": {"code": code, "message": message}}, status=status)
    resp.headers.update(headers)
    return resp


# A queue or tag name given over the API: 1 to 100 characters, no control characters or
# surrounding whitespace (lone surrogates, which only a JSON escape can carry, are refused too).
# The OpenAPI document publishes the same pattern, so a request its schema allows is a request
# the handler accepts.
_NAME_CHAR = r"[^\x00-\x1f\x7f-\x9f]"
_NAME_EDGE = r"[^\s\x00-\x1f\x7f-\x9f]"
NAME_PATTERN = rf"^{_NAME_EDGE}(?:{_NAME_CHAR}{{0,98}}{_NAME_EDGE})?$"
