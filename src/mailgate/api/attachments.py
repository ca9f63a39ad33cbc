"""``GET /v1/attachments/{id}?expires=…&sig=…``: attachment bytes behind a signed, expiring URL.

No bearer token: the signature is the authorization (the URL is handed to the consumer in the
envelope). 403 when the signature is wrong or the URL expired; bytes come from the
content-addressed ``BlobStore``. Attachments are always served as downloads with
``nosniff`` and a sandbox CSP, so an HTML attachment cannot run in the API's origin.
"""

from __future__ import annotations

import asyncio
import re
from urllib.parse import quote

from aiohttp import web

from mailgate.api.common import error
from mailgate.api.messages import STORE, URLS
from mailgate.mime.parse import parse_message
from mailgate.store.base import NotFound
from mailgate.store.blobs import BlobStore

BLOBS: web.AppKey[BlobStore] = web.AppKey("blobs", BlobStore)
_MIME_TYPE = re.compile(r"^[A-Za-z0-9][\w.+-]*/[A-Za-z0-9][\w.+-]*$")


async def get_attachment(request: web.Request) -> web.StreamResponse:
    att_id = request.match_info["id"]
    urls = request.app[URLS]
    if not urls.verify(att_id, request.query.get("expires"), request.query.get("sig")):
        return error(403, "forbidden", "the attachment URL is expired or not valid")
    try:
        rec = await request.app[STORE].get_attachment(att_id)
    except NotFound:
        return error(404, "not_found", "no such attachment")
    blobs = request.app[BLOBS]
    data: bytes | None
    try:
        data = blobs.get(rec.sha256)
    except (FileNotFoundError, ValueError):
        data = await _rederive(request, rec.msg_id, rec.sha256)
    if data is None:
        return error(404, "not_found", "no such attachment")
    filename = rec.filename or att_id
    ctype = rec.content_type or ""
    if not _MIME_TYPE.match(ctype):
        ctype = "application/octet-stream"
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    return web.Response(
        body=data,
        headers={
            "Content-Type": ctype,
            # RFC 6266 + RFC 8187: an ASCII fallback and the exact UTF-8 name
            "Content-Disposition": f'attachment; filename="{fallback}"; '
            f"filename*=UTF-8''{quote(filename, safe='')}",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox; default-src 'none'",
            "Cache-Control": "private, max-age=300",
        },
    )


async def _rederive(request: web.Request, msg_id: str, sha256: str) -> bytes | None:
    """The blob is missing (lost with the page cache in a power cut, or deleted): the raw
    message in SQLite is the source of truth, so parse it again to restore its blobs."""
    blobs = request.app[BLOBS]
    try:
        raw = await request.app[STORE].get_raw(msg_id)
    except NotFound:
        return None
    await asyncio.to_thread(parse_message, raw, blob_sink=blobs.put)
    try:
        return blobs.get(sha256)
    except (FileNotFoundError, ValueError):
        return None


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/attachments/{id}", get_attachment)
