"""Intent: why a message was sent — by a person, or by a machine that must not be answered.

Every envelope gets ``intent`` in ``human``, ``auto-reply``, ``out-of-office``, ``bounce``,
``list``, ``ticket-system-ack``, ``own-notification`` or ``calendar`` (an iCalendar reply,
cancellation or counter-proposal). Auto-reply and bounce loops are the most reported pain of
helpdesks that ingest mail; the reply guard never answers anything but ``human``, and rules can
route on it.

What counts as evidence is the signal table in ``pipeline/intent_signals.py`` (documented in
``docs/intent.md``, with the source of each row). This module only combines the rows: the first
row, in table order, that fired, is not explained away by a human counter-signal (``vetoed_by``)
and, when it ``needs`` corroboration, has a live row of one of those groups, decides. Nothing
deciding: ``human``.
"""

from __future__ import annotations

from mailgate.envelope import LOOP_HEADER, Envelope
from mailgate.envelope_view import EnvView
from mailgate.pipeline.base import Context, Verdict
from mailgate.pipeline.intent_signals import (
    BODY_LIMIT,
    INTENTS,
    SIGNALS,
    SUBJECT_LIMIT,
    Facts,
    Own,
    Signal,
    own_of,
)

__all__ = ["INTENTS", "LOOP_HEADER", "IntentStage", "classify_intent", "decide"]


def _own(ctx: Context | None) -> Own:
    """Our domains and reply addresses, once per run (no config: loops count as ours)."""
    if ctx is None:
        return Own()
    own = ctx.memo.get("own-intent")
    if not isinstance(own, Own):
        own = own_of(ctx.root.domains, ctx.root.reply)
        ctx.memo["own-intent"] = own
    return own


def facts_of(env: Envelope, ctx: Context | None = None) -> Facts:
    view = ctx.view(env) if ctx is not None else EnvView(env)
    raw_from = view.section("envelope").get("mailFrom")
    return Facts(
        headers=view.headers,
        subject=view.text("subject")[:SUBJECT_LIMIT].lower(),
        body=view.text("text")[:BODY_LIMIT].lower(),
        sender=view.sender,
        # RFC 5321 4.5.5: MAIL FROM:<> (an unknown sender, None, is not a null one)
        null_sender=isinstance(raw_from, str) and raw_from.strip() in ("", "<>"),
        env=env,
        own=_own(ctx),
    )


def decide(facts: Facts, signals: tuple[Signal, ...] = SIGNALS) -> tuple[str, list[str]]:
    """(intent, the signals that decided it) from the table."""
    fired = []
    for s in signals:
        ev = facts.results[s.id] = s.test(facts)
        if ev is not None:
            fired.append((s, ev))
    groups = {s.group for s, _ in fired}
    live = [(s, ev) for s, ev in fired if not s.vetoed_by & groups]
    live_groups = {s.group for s, _ in live}
    for s, ev in live:
        if s.intent == "human":
            continue
        if not s.needs:
            return s.intent, [f"{s.id}: {ev}"]
        if s.needs & live_groups:
            support = next(f"{o.id}: {e}" for o, e in live if o.group in s.needs)
            return s.intent, [f"{s.id}: {ev}", support]
    explained = [f"{s.id}: {ev}" for s, ev in fired if s.intent == "human"]
    return "human", explained or ["no automation signal"]


def classify_intent(env: Envelope, ctx: Context | None = None) -> tuple[str, list[str]]:
    """(intent, the signals that decided it)."""
    return decide(facts_of(env, ctx))


class IntentStage:
    name = "intent"
    description = (
        "human, auto-reply, out-of-office, bounce, list, ticket-system-ack, own-notification, "
        "calendar"
    )

    async def run(self, env: Envelope, ctx: Context) -> Verdict | None:
        intent, reasons = classify_intent(env, ctx)
        env["intent"] = intent
        ctx.note(f"{intent}: {', '.join(reasons)}")
        return None


STAGE = IntentStage()
