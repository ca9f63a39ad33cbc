"""The aiohttp application of the HTTP API: routes, bearer-token auth, JSON errors, metrics.

``create_api`` only builds the ``web.Application``; ``app.py`` (the composition root) runs it
with ``AppRunner``/``TCPSite`` on ``[api] listen``. Routes under ``/v1/messages`` need a bearer
token (``api.auth``); attachments are authorized by their signed URL; ``/healthz``,
``/readyz``, ``/metrics`` and ``/openapi.json`` are open (bind the API to a private address or
put it behind a proxy that restricts them).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware

from mailgate.api import attachments, labels, messages, ops, subjects
from mailgate.api.auth import TokenAuth
from mailgate.api.common import ApiStore, error, json_response
from mailgate.api.openapi import document
from mailgate.api.urls import AttachmentUrlSigner
from mailgate.config import ApiConfig
from mailgate.delivery.metrics import API_REQUESTS
from mailgate.store.base import StoreError
from mailgate.store.blobs import BlobStore
from mailgate.store.governance import GovernanceStore

log = logging.getLogger("mailgate.api")

AUTH: web.AppKey[TokenAuth] = web.AppKey("auth", TokenAuth)
PROTECTED_PREFIX = ("/v1/messages", "/v1/subjects")
# Query parameters each route takes; anything else is a client mistake worth a 400 (a typo
# such as ?limt=10 would otherwise be silently ignored).
QUERY_PARAMS: dict[str, frozenset[str]] = {
    "/v1/messages": frozenset({"cursor", "limit"}),
    "/v1/attachments/{id}": frozenset({"expires", "sig"}),
    subjects.ROUTE: subjects.QUERY,
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors_and_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route.resource
    name = route.canonical if route is not None else "unmatched"
    resp: web.StreamResponse
    try:
        resp = await handler(request)
    except web.HTTPException as exc:
        # aiohttp's own 404/405/413 as JSON errors, keeping headers such as Allow
        resp = error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
        for key in ("Allow",):
            if key in exc.headers:
                resp.headers[key] = exc.headers[key]
    except StoreError as exc:
        # the store's trouble (disk full, locked), not a bug here: no traceback
        log.warning(
            "store error serving a request",
            extra={"fields": {"route": name, "error": f"{type(exc).__name__}: {exc}"}},
        )
        resp = error(503, "store_unavailable", "the store is not available; retry later")
    API_REQUESTS.labels(route=name, status=str(resp.status)).inc()
    return resp


@web.middleware
async def _strict_query(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route.resource
    if route is not None:
        unknown = sorted(set(request.query) - QUERY_PARAMS.get(route.canonical, frozenset()))
        if unknown:
            return error(400, "unknown_parameter", f"unknown query parameter {unknown[0]!r}")
    return await handler(request)


def _auth_middleware(auth: TokenAuth) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(PROTECTED_PREFIX):
            who = auth.authenticate(request.headers.get("Authorization"))
            if who is None:
                # RFC 6750 §3: a challenge on every 401
                return error(
                    401,
                    "unauthorized",
                    "a valid bearer token is required",
                    **{"WWW-Authenticate": 'Bearer realm="mailgate"'},
                )
            request[messages.PRINCIPAL] = who
        return await handler(request)

    return middleware


async def _openapi(request: web.Request) -> web.Response:
    return json_response(document())


def create_api(
    store: ApiStore,
    cfg: ApiConfig,
    *,
    blobs: BlobStore,
    urls: AttachmentUrlSigner,
    data_dir: Path,
    governance: GovernanceStore | None = None,
    erase_notify: dict[str, list[str]] | None = None,
) -> web.Application:
    """The API application (see the module docstring); generates the quick-start token if needed."""
    auth = TokenAuth(cfg.tokens, data_dir)
    app = web.Application(
        middlewares=[_errors_and_metrics, _auth_middleware(auth), _strict_query],
        client_max_size=64 * 1024,  # the API takes no large bodies
    )
    app[messages.STORE] = store
    app[messages.URLS] = urls
    app[attachments.BLOBS] = blobs
    app[ops.API_CFG] = cfg
    app[ops.DATA_DIR] = Path(data_dir)
    app[AUTH] = auth
    messages.add_routes(app)
    labels.add_routes(app, store)
    attachments.add_routes(app)
    ops.add_routes(app)
    if governance is not None:  # DELETE /v1/subjects/{address} (admin tokens, issue 15)
        subjects.add_routes(app, governance, erase_notify or {})
    app.router.add_get("/openapi.json", _openapi)
    return app
