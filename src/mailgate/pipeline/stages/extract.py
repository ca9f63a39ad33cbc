"""Extract: named entities (order, PO, invoice, ticket, card numbers) into ``entities``.

Patterns come from `mailgate.pipeline.entities` (defaults plus ``[[pipeline.entities]]``).
Masking entities (card numbers) are masked in ``subject``, ``text``, ``replyText`` and
``html`` here, and stored masked; their values are never logged (the stage notes only counts).
"""

from __future__ import annotations

from mailgate.envelope import Envelope
from mailgate.pipeline.base import Context, Verdict
from mailgate.pipeline.entities import EntityPattern, SpanCache, build_entities, extract, mask

_PATTERNS = "entity_patterns"
_FOUND = "entities"


def patterns_for(ctx: Context) -> list[EntityPattern]:
    """The compiled entity patterns of this run's config (compiled once per runner)."""
    cached = ctx.memo.get(_PATTERNS)
    if cached is None:
        cached = build_entities(ctx.config)
        ctx.memo[_PATTERNS] = cached
    return list(cached)


def lowered_cache(ctx: Context) -> dict[str, str]:
    """``field -> text.lower()`` for this run, shared by rule matchers and entity patterns."""
    cache: dict[str, str] = ctx.memo.setdefault("lowered", {})
    return cache


def entities_for(env: Envelope, ctx: Context) -> dict[str, list[str]]:
    """Entities of this message, extracted once per run (rules and this stage share them)."""
    found = ctx.memo.get(_FOUND)
    if found is None:
        found = extract(env, patterns_for(ctx), lowered_cache(ctx), spans_cache(ctx))
        ctx.memo[_FOUND] = found
    return dict(found)


def spans_cache(ctx: Context) -> SpanCache:
    """Spans of the masking entities found while extracting, reused by the masking."""
    cache: SpanCache = ctx.memo.setdefault("entity-spans", {})
    return cache


class ExtractStage:
    name = "extract"
    description = "named entities from subject and text; card numbers masked"

    async def run(self, env: Envelope, ctx: Context) -> Verdict | None:
        found = entities_for(env, ctx)
        masked = mask(env, patterns_for(ctx), spans_cache(ctx))
        if masked:
            lowered_cache(ctx).clear()  # the cached copies still hold the unmasked values
        env["entities"] = found
        summary = ", ".join(f"{k}={len(v)}" for k, v in found.items()) or "none"
        ctx.note(f"entities: {summary}" + (f"; {masked} value(s) masked" if masked else ""))
        return None


STAGE = ExtractStage()
