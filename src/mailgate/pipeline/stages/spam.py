"""Spam: rspamd's score for the raw message, as MailParse names it (``spam.score/flagged``).

The raw message goes to rspamd's ``/checkv2`` with the SMTP facts (client IP, HELO, MAIL FROM,
recipients, queue id) and mailgate's own Authentication-Results. The envelope gets
``spam: {score, flagged, action, required, symbols: [{name, score, description}], engine,
error}``; rules match ``spam.score``, ``spam.flagged``, ``spam.action`` and ``spam.symbol``.

What is held: with ``[spam] quarantine_at``/``reject_at`` set (> 0), a score at or above either
(the message is already accepted, so "reject" becomes quarantine in the worker); with both 0,
rspamd's own action — ``reject`` holds it. ``flagged`` is true for a held message and for
rspamd's ``add header``/``rewrite subject``: it is delivered but never auto-acknowledged (the
reply guard skips flagged spam).

Failure policy (``[spam] on_error``, default ``continue``): rspamd down, slow or answering
garbage -> ``spam: {error, score: null, flagged: false}`` and the message goes on.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from mailgate.config import Config, SpamConfig
from mailgate.envelope import Envelope
from mailgate.envelope_view import EnvView
from mailgate.pipeline.base import Context, Quarantine, Verdict
from mailgate.pipeline.lifecycle import Services
from mailgate.pipeline.scanner_stage import ScannerStage
from mailgate.scanners.base import SpamVerdict
from mailgate.scanners.rspamd import SPAM_ACTIONS, MessageFacts, RspamdClient
from mailgate.store.base import SpooledMessage

MAX_SYMBOLS = 50
"""Symbols kept in the envelope (largest absolute score first); rspamd can list hundreds."""


class SpamStage(ScannerStage[SpamConfig, RspamdClient, SpamVerdict]):
    name = "spam"
    description = "rspamd score, action and symbols; spam is flagged or held"

    @classmethod
    def build(cls, cfg: Config, services: Services) -> SpamStage:
        if cfg.spam.engine == "none" or services.raw_message is None:
            return cls(cfg.spam)
        return cls(cfg.spam, RspamdClient(cfg.spam), services.raw_message)

    async def start(self) -> None:
        if self.client is not None:
            await self.client.start()

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()

    def _ahead_call(
        self, client: RspamdClient, msg: SpooledMessage
    ) -> Callable[[], Awaitable[SpamVerdict]]:
        auth = msg.auth or {}
        spooled = MessageFacts(
            client_ip=msg.client_ip or "",
            helo=msg.helo or "",
            mail_from=(msg.mail_from or "").strip("<>"),
            rcpt_to=tuple(msg.rcpt_to),
            queue_id=msg.id,
            authentication_results=str(auth.get("authenticationResults") or ""),
        )
        return functools.partial(client.check, msg.raw, spooled)

    def _call(
        self, client: RspamdClient, raw: bytes, env: Envelope, msg_id: str
    ) -> Awaitable[SpamVerdict]:
        return client.check(raw, facts(env, msg_id))

    def _error_field(self, error: str) -> dict[str, Any]:
        return {
            "engine": "rspamd",
            "score": None,
            "flagged": False,
            "action": None,
            "required": None,
            "symbols": [],
            "error": error,
        }

    async def _judge(self, env: Envelope, ctx: Context, verdict: SpamVerdict) -> Verdict | None:
        hold = should_hold(self.cfg, verdict)
        env["spam"] = spam_field(verdict, flagged=hold or verdict.action in SPAM_ACTIONS)
        detail = f"score {verdict.score:g} (action {verdict.action}, required {verdict.required:g})"
        if hold:
            ctx.quarantine.append(Quarantine("spam", detail))
        ctx.note(("spam: " if hold else "") + detail)
        return None


def should_hold(cfg: SpamConfig, verdict: SpamVerdict) -> bool:
    """Thresholds when set, else rspamd's ``reject`` (see the module docstring)."""
    limits = [t for t in (cfg.quarantine_at, cfg.reject_at) if t > 0]
    if limits:
        return verdict.score >= min(limits)
    return verdict.action == "reject"


def spam_field(verdict: SpamVerdict, *, flagged: bool) -> dict[str, Any]:
    return {
        "engine": "rspamd",
        "score": verdict.score,
        "flagged": flagged,
        "action": verdict.action,
        "required": verdict.required,
        "symbols": [s.to_json() for s in verdict.symbols[:MAX_SYMBOLS]],
        "error": None,
    }


def facts(env: Envelope, msg_id: str) -> MessageFacts:
    view = EnvView(env)
    session = view.section("envelope")
    return MessageFacts(
        client_ip=str(session.get("clientIp") or ""),
        helo=str(session.get("helo") or ""),
        mail_from=view.mail_from,
        rcpt_to=tuple(view.rcpt_to),
        queue_id=msg_id,
        authentication_results=str(env.get("authenticationResults") or ""),
    )


STAGE = SpamStage(SpamConfig())
