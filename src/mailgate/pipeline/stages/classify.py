"""Classify: evaluate every routing rule, then ask the tenant's trained model when no rule chose.

This is the *decide* half of routing (Mailman's chain ``rule_hits``): it fills ``ctx.hits``
with one `RuleHit` per rule (matched or not, the reasons, or why it was skipped). Hard rules
come first: when a matching rule sets a queue, the model is not consulted. Otherwise, with
``[classifier] enabled`` and an active model for the message's tenant, the model's
`ModelVerdict` (queue, calibrated confidence, the terms that drove it) goes to
``ctx.memo["classifier"]``; ``route`` turns it into the queue — or the fallback queue when the
confidence is under the threshold — and explains it in ``route.reasons``/``route.model``.
Entity matchers see the same entities ``extract`` stores, computed once per run.

Each worker holds the loaded models in a `ModelHolder` built by the stage's ``build`` (the
lifecycle in ``pipeline.lifecycle``). It asks the store which version is active at most once
per `CHECK_INTERVAL` (one small query) and loads a newly activated version's JSON in a thread,
so an activation reaches every worker within seconds and without a restart.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from mailgate.classifier.features import message_text
from mailgate.classifier.model import LinearModel, ModelError, load_model
from mailgate.config import ClassifierConfig, Config
from mailgate.envelope import Envelope
from mailgate.pipeline.base import Context, Verdict
from mailgate.pipeline.lifecycle import Services, in_thread
from mailgate.pipeline.rules import Facts
from mailgate.pipeline.stages.extract import entities_for, lowered_cache
from mailgate.store.base import NotFound
from mailgate.store.models import ModelSource

log = logging.getLogger("mailgate.pipeline")

CHECK_INTERVAL = 1.0
"""Seconds between two looks at which model versions are active (one indexed query)."""
MEMO_KEY = "classifier"


@dataclass(frozen=True)
class ModelVerdict:
    """What the model said about one message, and whether it is confident enough."""

    version: int
    queue: str
    confidence: float
    threshold: float
    features: list[str]
    fallback_queue: str

    @property
    def accepted(self) -> bool:
        return self.confidence >= self.threshold

    @property
    def routed_queue(self) -> str:
        return self.queue if self.accepted else self.fallback_queue

    def reasons(self) -> list[str]:
        """``route.reasons`` lines a support lead can read."""
        words = ", ".join(self.features) if self.features else "no distinctive words"
        if self.accepted:
            return [
                f"model v{self.version}: queue {self.queue!r} with confidence"
                f" {self.confidence:.2f} (threshold {self.threshold:.2f}); words that decided: {words}"
            ]
        return [
            f"low confidence ({self.confidence:.2f} < {self.threshold:.2f}): model v{self.version}"
            f" leaned to {self.queue!r} (words: {words}); sent to {self.fallback_queue!r}"
            " for manual triage"
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "queue": self.queue,
            "confidence": round(self.confidence, 4),
            "threshold": self.threshold,
            "accepted": self.accepted,
            "features": list(self.features),
        }


class ModelHolder:
    """The active model per tenant for one worker (see the module docstring)."""

    def __init__(
        self, source: ModelSource | None, *, check_interval: float = CHECK_INTERVAL
    ) -> None:
        self.source = source
        self.check_interval = check_interval
        self._active: dict[str, int] = {}
        self._loaded: dict[int, LinearModel] = {}
        self._bad: set[int] = set()
        self._checked_at = float("-inf")

    @classmethod
    def fixed(cls, tenant_models: dict[str, tuple[int, LinearModel]]) -> ModelHolder:
        """A holder with given models and no store (``replay --model``, ``model eval``)."""
        holder = cls(None)
        for tenant, (version, model) in tenant_models.items():
            holder._active[tenant] = version
            holder._loaded[version] = model
        return holder

    async def get(self, tenant: str) -> tuple[int, LinearModel] | None:
        if self.source is not None and time.monotonic() - self._checked_at >= self.check_interval:
            self._active = await self.source.active_models()
            self._checked_at = time.monotonic()
            live = set(self._active.values())
            for version in list(self._loaded):
                if version not in live:
                    del self._loaded[version]
        active = self._active.get(tenant)
        if active is None or active in self._bad:
            return None
        version = active
        model = self._loaded.get(version)
        if model is None:
            if self.source is None:
                return None
            try:
                data = await self.source.model_data(version)
                model = await in_thread(load_model, data)
            except (ModelError, NotFound) as exc:
                self._bad.add(version)
                log.warning(
                    "model not loaded",
                    extra={"fields": {"tenant": tenant, "version": version, "error": str(exc)}},
                )
                return None
            self._loaded[version] = model
            log.info(
                "model loaded",
                extra={
                    "fields": {"tenant": tenant, "version": version, "queues": len(model.queues)}
                },
            )
        return version, model


class ClassifyStage:
    name = "classify"
    description = "evaluate the routing rules; then the trained model if no rule set the queue"

    def __init__(
        self, cfg: ClassifierConfig | None = None, models: ModelHolder | None = None
    ) -> None:
        self.cfg = cfg or ClassifierConfig()
        self.models = models

    @classmethod
    def build(cls, cfg: Config, services: Services) -> ClassifyStage:
        if not cfg.classifier.enabled or services.models is None:
            return cls(cfg.classifier)
        return cls(cfg.classifier, ModelHolder(services.models))

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
        ctx.memo.pop(MEMO_KEY, None)
        if self.models is None or not self.cfg.enabled:
            return None
        by_rule = next((h for h in hits if h.matched and h.rule.actions.queue is not None), None)
        if by_rule is not None:
            ctx.note(f"model not consulted: rule {by_rule.rule.name} set the queue")
            return None
        tenant = ctx.view(env).tenant
        found = await self.models.get(tenant)
        if found is None:
            ctx.note(f"no active model for tenant {tenant!r}")
            return None
        version, model = found
        subject, body = message_text(env)
        pred = model.predict(subject, body)
        verdict = ModelVerdict(
            version=version,
            queue=pred.queue,
            confidence=pred.confidence,
            threshold=self.cfg.threshold,
            features=pred.features,
            fallback_queue=self.cfg.fallback_queue,
        )
        ctx.memo[MEMO_KEY] = verdict
        ctx.note(
            f"model v{version}: {pred.queue} ({pred.confidence:.2f}"
            f" {'>=' if verdict.accepted else '<'} {self.cfg.threshold:.2f})"
        )
        return None


STAGE = ClassifyStage()
