"""Classify: evaluate every routing rule against the message and record each hit and miss.

This is the *decide* half of routing (Mailman's chain ``rule_hits``): it changes nothing in the
envelope, it fills ``ctx.hits`` with one `RuleHit` per rule (matched or not, the reasons, or
why it was skipped). ``route`` turns the hits into queue, tags, priority and targets. Entity
matchers see the same entities ``extract`` stores, computed once per run (`entities_for`).
"""

from __future__ import annotations

from mailgate.envelope import Envelope
from mailgate.pipeline.base import Context, Verdict
from mailgate.pipeline.rules import Facts
from mailgate.pipeline.stages.extract import entities_for, lowered_cache


class ClassifyStage:
    name = "classify"
    description = "evaluate the routing rules; record every hit and miss with its reasons"

    async def run(self, env: Envelope, ctx: Context) -> Verdict | None:
        facts = Facts(
            env, ctx.view(env), entities=lambda: entities_for(env, ctx), lowered=lowered_cache(ctx)
        )
        hits = ctx.rules.evaluate(facts)
        ctx.hits = hits
        matched = [h.rule.name for h in hits if h.matched]
        ctx.note(
            f"{len(matched)} of {len(hits)} rules matched"
            + (f": {', '.join(matched)}" if matched else "")
        )
        return None


STAGE = ClassifyStage()
