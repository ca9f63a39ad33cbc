"""``DELETE /v1/subjects/{address}``: erase a data subject (GDPR Art. 17) through the API.

Only a token with ``admin = true`` in ``[[api.tokens]]`` may call it (403 otherwise): erasure
crosses tenants and cannot be undone, so it is not something every helpdesk client gets.
``?tenant=T`` limits it to one tenant (default: every tenant); ``?dry_run=true`` only counts.
The answer is the erasure report (counts, the erased message ids and the subject's keyed
hash; never the address). Erasing someone with no messages is not an error: the request is
idempotent and answers 200 with zero counts.
"""

from __future__ import annotations

import logging

from aiohttp import web

from mailgate.api.common import error, json_response
from mailgate.api.messages import principal
from mailgate.store.governance import GovernanceStore, valid_address

log = logging.getLogger("mailgate.api")

GOVERNANCE: web.AppKey[GovernanceStore] = web.AppKey("governance", GovernanceStore)  # type: ignore[type-abstract]
NOTIFY: web.AppKey[dict[str, list[str]]] = web.AppKey("erase_notify", dict)
ROUTE = "/v1/subjects/{address}"
QUERY = frozenset({"tenant", "dry_run"})


async def erase_subject(request: web.Request) -> web.Response:
    who = principal(request)
    if not who.admin:
        return error(403, "forbidden", "erasing a data subject needs an admin token")
    address = request.match_info["address"]
    if not valid_address(address):
        return error(400, "bad_address", "give one complete address like alice@example.com")
    dry = request.query.get("dry_run", "false").lower()
    if dry not in ("true", "false", "1", "0"):
        return error(400, "bad_dry_run", "dry_run must be true or false")
    tenant = request.query.get("tenant") or None
    report = await request.app[GOVERNANCE].erase_subject(
        address,
        tenant=tenant,
        dry_run=dry in ("true", "1"),
        actor=f"api:{who.name}",
        notify=request.app[NOTIFY],
    )
    log.info(
        "data subject erased" if not report.dry_run else "data subject erasure (dry run)",
        extra={
            "fields": {
                "subject": report.subject_hash,
                "messages": report.messages,
                "actor": who.name,
            }
        },
    )
    return json_response(report.as_dict())


def add_routes(
    app: web.Application, governance: GovernanceStore, notify: dict[str, list[str]]
) -> None:
    app[GOVERNANCE] = governance
    app[NOTIFY] = notify
    app.router.add_delete(ROUTE, erase_subject)
