"""Quarantine decision: hold risky mail for an operator instead of delivering it.

Candidates, in order of precedence: the SMTP-time authentication policy (``authAction`` =
``quarantine``, from ``auth.dmarc_enforce``/``spf_fail``/``temperror``; reason ``dmarc`` when
DMARC decided it, else ``auth``), the ``scan`` findings, then a rule's ``quarantine`` action.
The first becomes ``quarantine: {reason, detail}``; every candidate is in the stage's reasons.
Unscannable mail (``parseErrors`` saying part of the message was never read, issue 12) is held
here even when the ``scan`` stage is left out of ``[pipeline] stages`` or skipped by a rule.
A quarantined message is stored with its raw bytes and not delivered; ``mailgate quarantine
release`` runs the stages after this one and delivers it (``ctx.mode == "release"``).
"""

from __future__ import annotations

from mailgate.envelope import Envelope
from mailgate.envelope_view import EnvView
from mailgate.pipeline.base import Context, Quarantine, Verdict
from mailgate.pipeline.stages.scan import unscannable_finding


def auth_candidate(env: Envelope) -> Quarantine | None:
    view = EnvView(env)
    action = view.section("authAction")
    verb = str(action.get("action") or "").lower()
    if verb not in ("quarantine", "reject"):
        return None
    reason_text = str(action.get("reason") or "")
    dmarc = view.section("dmarc")
    is_dmarc = "dmarc" in reason_text.lower() or (
        dmarc.get("result") == "fail" and "spf" not in reason_text.lower()
    )
    detail = reason_text or f"authentication policy said {verb}"
    return Quarantine("dmarc" if is_dmarc else "auth", detail)


class QuarantineStage:
    name = "quarantine"
    description = "hold the message when auth policy, a scan finding or a rule asks for it"

    async def run(self, env: Envelope, ctx: Context) -> Verdict | None:
        candidates: list[Quarantine] = []
        auth = auth_candidate(env)
        if auth is not None:
            candidates.append(auth)
        # scan runs before route, so scan findings come before a rule's quarantine action
        candidates.extend(ctx.quarantine)
        if not any(c.reason == "unscannable" for c in candidates):
            hidden = unscannable_finding(env.get("parseErrors") or [])
            if hidden is not None:
                candidates.append(hidden)
        for c in candidates:
            ctx.note(f"{c.reason}: {c.detail}")
        if not candidates:
            env["quarantine"] = None
            ctx.note("nothing to hold")
            return None
        if ctx.mode == "release":
            env["quarantine"] = None
            ctx.note("released by an operator: delivering")
            return None
        chosen = candidates[0]
        env["quarantine"] = {"reason": chosen.reason, "detail": chosen.detail}
        return chosen


STAGE = QuarantineStage()
