"""Operations endpoints: ``/healthz`` (alive), ``/readyz`` (able to work), ``/metrics``.

``/readyz`` answers 503 with the failing checks when the store does not answer, free disk
space under the data dir falls below ``[api] readyz_min_free_disk``, or the oldest due webhook
delivery of an enabled target has waited longer than ``readyz_max_outbox_lag`` (the outbox is
stuck), or a configured scanning engine (rspamd, clamd) has failed its probe for longer than
its ``unready_after`` (checks ``scan:rspamd``, ``scan:clamav``). ``/metrics`` is the Prometheus text format of the shared registry; delivery gauges are
refreshed from the store on each scrape. With ``[api] metrics_token`` set, ``/metrics`` wants
``Authorization: Bearer <token>`` (Prometheus ``authorization``/``bearer_token`` scrape config)
and answers 401 otherwise; ``/healthz`` and ``/readyz`` stay open for load balancers.
"""

from __future__ import annotations

import hashlib
import hmac
import shutil
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from mailgate.api.common import json_response
from mailgate.api.messages import STORE
from mailgate.config import ApiConfig
from mailgate.delivery.metrics import refresh
from mailgate.delivery.process_metrics import merged_exposition
from mailgate.metrics import REGISTRY
from mailgate.scanners.health import EngineWatch
from mailgate.store.base import StoreError

API_CFG: web.AppKey[ApiConfig] = web.AppKey("api_cfg", ApiConfig)
DATA_DIR: web.AppKey[Path] = web.AppKey("data_dir", Path)
SCAN_ENGINES: web.AppKey[EngineWatch] = web.AppKey("scan_engines", EngineWatch)


def watch_engines(app: web.Application, watch: EngineWatch) -> None:
    """``/readyz`` also probes the content-scanning engines (rspamd, clamd) ``watch`` knows."""
    app[SCAN_ENGINES] = watch

    async def close(_: web.Application) -> None:
        await watch.close()

    app.on_cleanup.append(close)


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    store, cfg, data_dir = request.app[STORE], request.app[API_CFG], request.app[DATA_DIR]
    checks: dict[str, Any] = {}
    ok = True
    store_ok = await store.ping()
    checks["store"] = {"ok": store_ok}
    ok &= store_ok
    try:
        free = shutil.disk_usage(data_dir).free
        disk_ok = free >= cfg.readyz_min_free_disk
        checks["disk"] = {"ok": disk_ok, "free_bytes": free, "min_bytes": cfg.readyz_min_free_disk}
    except OSError as exc:
        disk_ok = False
        checks["disk"] = {"ok": False, "error": str(exc)}
    ok &= disk_ok
    if store_ok:
        try:
            disabled = await store.disabled_targets()
            stats = await store.outbox_stats(exclude_targets=list(disabled))
            lag_ok = stats.oldest_due_age <= cfg.readyz_max_outbox_lag
            checks["outbox"] = {
                "ok": lag_ok,
                "due": stats.due,
                "oldest_due_seconds": round(stats.oldest_due_age, 3),
                "max_seconds": cfg.readyz_max_outbox_lag,
                "disabled_targets": sorted(disabled),
            }
        except StoreError as exc:
            lag_ok = False
            checks["outbox"] = {"ok": False, "error": str(exc)}
        ok &= lag_ok
    watch = request.app.get(SCAN_ENGINES)
    if watch is not None:
        engines_ok, engine_checks = await watch.checks()
        checks.update(engine_checks)
        ok &= engines_ok
    return json_response(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503
    )


def metrics_authorized(request: web.Request, token: str) -> bool:
    """Whether the request carries ``Authorization: Bearer <token>`` (compared in constant time)."""
    if not token:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    # equal-length digests: the comparison time says nothing about the token's length
    want = hashlib.sha256(token.encode()).digest()
    return hmac.compare_digest(want, hashlib.sha256(given.strip().encode()).digest())


async def metrics(request: web.Request) -> web.Response:
    if not metrics_authorized(request, request.app[API_CFG].metrics_token):
        return web.Response(
            status=401,
            text="401: /metrics needs Authorization: Bearer <[api] metrics_token>\n",
            headers={"WWW-Authenticate": 'Bearer realm="mailgate-metrics"'},
        )
    try:
        await refresh(request.app[STORE])
    except StoreError:
        pass  # still serve the counters; /readyz reports the store
    body = await merged_exposition(request.app[STORE], REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
