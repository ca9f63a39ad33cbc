"""Route: turn the rule hits into ``queue``, ``tags``, ``priority``, ``route`` and targets.

The *act* half of routing; the semantics (accumulate, first queue wins, highest priority,
union of tags, ``stop``) are `mailgate.pipeline.rules.decide`'s and are documented there and
in ``docs/rules.md``. When no rule set a queue and ``classify`` asked the tenant's trained
model, the model's queue (or ``[classifier] fallback_queue`` below the threshold) replaces the
default queue, with ``route.model`` and the reasons in words. Webhook targets are always the
message tenant's: a rule's ``webhooks`` only narrows them, so one tenant's mail never reaches
another tenant's endpoint.
"""

from __future__ import annotations

from mailgate.config import Config
from mailgate.envelope import Envelope
from mailgate.pipeline.base import Context, Quarantine, Verdict
from mailgate.pipeline.rules import Facts, decide
from mailgate.pipeline.stages.classify import MEMO_KEY as MODEL_MEMO
from mailgate.pipeline.stages.classify import ModelVerdict
from mailgate.pipeline.stages.extract import entities_for, lowered_cache


def tenant_targets(cfg: Config, tenant: str) -> tuple[str, ...]:
    """Target ids (``name``, or the URL when unnamed) of the tenant's enabled webhooks."""
    return tuple(w.name or w.url for w in cfg.webhooks if w.enabled and w.tenant == tenant)


class RouteStage:
    name = "route"
    description = "queue, tags, priority and webhook targets from the rule hits"

    async def run(self, env: Envelope, ctx: Context) -> Verdict | None:
        hits = ctx.hits
        if hits is None:  # classify not in the configured order: evaluate here
            hits = ctx.rules.evaluate(
                Facts(env, entities=lambda: entities_for(env, ctx), lowered=lowered_cache(ctx))
            )
            ctx.hits = hits
        decision = decide(hits, ctx.config.default_queue)
        env["queue"] = decision.queue
        env["tags"] = decision.tags
        env["priority"] = decision.priority
        env["route"] = {
            "rule": decision.rule,
            "confidence": decision.confidence,
            "reasons": decision.reasons,
        }
        model = ctx.memo.get(MODEL_MEMO)
        if isinstance(model, ModelVerdict):
            # classify consulted the model only because no rule set a queue: it replaces the
            # default queue (or sends the message to the fallback queue, with the reason)
            env["queue"] = model.routed_queue
            env["route"]["confidence"] = round(model.confidence, 4)
            env["route"]["reasons"] = [
                r for r in decision.reasons if not r.startswith("default queue")
            ] + model.reasons()
            env["route"]["model"] = model.to_json()
        tenant = ctx.view(env).tenant
        own = tenant_targets(ctx.root, tenant)
        if decision.webhooks is None:
            ctx.targets = own
        else:
            ctx.targets = tuple(t for t in decision.webhooks if t in own)
            for t in decision.webhooks:
                if t not in own:
                    ctx.note(f"webhook {t!r} is not a target of tenant {tenant!r}: not used")
        ctx.reply = decision.reply
        if decision.quarantine is not None:
            ctx.quarantine.append(Quarantine(*decision.quarantine))
        ctx.note(
            f"queue={env['queue']} rule={decision.rule} priority={decision.priority}"
            f" targets={len(ctx.targets)}"
        )
        return None


STAGE = RouteStage()
