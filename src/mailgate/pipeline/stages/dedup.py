"""Dedup: the same message arriving twice within the window is recorded, not delivered twice.

The key is the Message-ID (RFC 5322 section 3.6.4: unique per message), per tenant; a message
without one is keyed by a hash of sender, normalized subject and normalized body. The first
message with a key wins: a later one within ``pipeline.dedup_window`` gets ``duplicateOf`` =
the first message's id, a copy of its route and thread, and the run stops (no event, no
reply). One SMTP transaction to three of our inboxes is already one message listing all three
in ``envelope.rcptTo``; separate transactions carrying the same Message-ID (a sender's MTA
splitting recipients, or retrying after a lost 250) are folded here.
"""

from __future__ import annotations

import hashlib
import re
import time

from mailgate.envelope import Envelope
from mailgate.pipeline.base import Context, Stop, Verdict
from mailgate.pipeline.view import EnvView, parse_time
from mailgate.store.pipeline import DedupIntent

_WS = re.compile(r"\s+")
_SUBJECT_PREFIX = re.compile(r"^\s*((re|fwd?|aw|wg|sv|vs|antw)\s*(\[\d+\])?\s*:\s*)+", re.I)
COPIED = ("queue", "tags", "priority", "route", "thread", "entities", "intent")


def dedup_key(env: Envelope, view: EnvView | None = None) -> str:
    """``mid:<message-id>`` or, without one, ``hash:<sha256 of sender, subject, body>``."""
    view = view or EnvView(env)
    mid = env.get("messageId")
    if isinstance(mid, str) and mid.strip().strip("<>").strip():
        return "mid:" + mid.strip().strip("<>").strip()
    subject = _SUBJECT_PREFIX.sub("", view.text("subject"))
    body = view.text("text") or view.text("html")
    material = "\n".join(
        [view.sender, _WS.sub(" ", subject).strip().lower(), _WS.sub(" ", body).strip().lower()]
    )
    return "hash:" + hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()


def received_at(env: Envelope) -> float:
    return parse_time(env.get("timestamp")) or time.time()


class DedupStage:
    name = "dedup"
    description = "same Message-ID (or content hash) within the window: duplicateOf, no delivery"

    async def run(self, env: Envelope, ctx: Context) -> Verdict | None:
        view = ctx.view(env)
        key = dedup_key(env, view)
        tenant = view.tenant
        at = received_at(env)
        window = ctx.config.dedup_window
        hit = await ctx.ports.find_duplicate(tenant, key, at - window)
        kind = key.split(":", 1)[0]
        if hit is not None and ctx.stored and hit.seen_at > at:
            # Replaying an old message whose key a later message took over after the window
            # expired: that later message is not what this one duplicated.
            hit = None
        if hit is not None and hit.msg_id != ctx.msg_id:
            ctx.duplicate = hit
            env["duplicateOf"] = hit.msg_id
            original = await ctx.ports.get_envelope(hit.msg_id)
            for field in COPIED:
                if field in original:
                    env[field] = original[field]
            reason = f"same {'Message-ID' if kind == 'mid' else 'content hash'} as {hit.msg_id}"
            ctx.note(reason)
            return Stop("duplicate", reason)
        if not ctx.stored and ctx.mode != "dry-run":
            ctx.intents.append(DedupIntent(tenant=tenant, key=key, seen_at=at, window=window))
        ctx.note(f"first with this {'Message-ID' if kind == 'mid' else 'content hash'}")
        return None


STAGE = DedupStage()
