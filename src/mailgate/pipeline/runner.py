"""The pipeline runner: stages in the configured order, time-boxed, logged, turned into intents.

``PipelineRunner.process(env)`` fills the pipeline's envelope fields (``intent``, ``queue``,
``tags``, ``priority``, ``route``, ``entities``, ``thread``, ``duplicateOf``, ``quarantine``)
and returns an `Outcome`: the message state and the intents the store applies in the
transaction that stores the envelope. The runner owns the robustness (STYLE.md):

* each stage runs under ``asyncio.timeout(pipeline.stage_timeout)``; a stage that raises or
  times out fails the whole run, and the ingest worker records the attempt, retries, and after
  ``pipeline.max_attempts`` dead-letters the message;
* one log line per stage outcome, ``msg_id stage=… verdict=… reason=…`` (logger
  ``mailgate.pipeline``; ``debug`` when the stage continued, ``info`` when it ended the run);
* a verdict ends the run: `Quarantine` -> state ``quarantined`` + ``QuarantineIntent``, no
  delivery; `Stop` (a duplicate) -> ``processed``, no delivery; no verdict -> ``processed`` +
  ``PublishIntent`` to the tenant's webhook targets (narrowed by rules), ordered by thread.

Stage names come from ``pipeline.stages``; a name no stage is registered under is skipped with
a debug line if it is reserved for a stage another part adds (``respond``), and refused at
config load otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mailgate.config import Config, ConfigError, run_checks
from mailgate.envelope import Envelope
from mailgate.envelope_view import EnvView
from mailgate.logs import describe_error, log_fields
from mailgate.pipeline.base import (
    Context,
    Mode,
    Quarantine,
    Stage,
    StageResult,
    Stop,
    Verdict,
    verdict_name,
)
from mailgate.pipeline.entities import build_entities
from mailgate.pipeline.rules import RuleHit, load_rules, validate_rules
from mailgate.pipeline.stages import registry
from mailgate.pipeline.stages.route import tenant_targets
from mailgate.reply import settings as reply_settings
from mailgate.store.base import Intent
from mailgate.store.delivery import PublishIntent
from mailgate.store.pipeline import DedupHit, PipelinePorts, QuarantineIntent, ThreadRef

log = logging.getLogger("mailgate.pipeline")

RESERVED_STAGES = frozenset({"respond"})
"""Stage names other parts of mailgate register later; tolerated in config until then."""
REQUIRED_STAGES = ("quarantine",)
"""Leaving these out would deliver what auth policy or the scan said to hold."""


class StageTimeout(Exception):
    """A stage overran ``pipeline.stage_timeout``."""


@dataclass
class Outcome:
    """What a run decided: the message state and the writes to apply with the envelope."""

    state: str
    intents: list[Intent]
    results: list[StageResult] = field(default_factory=list)
    verdict: Verdict | None = None
    hits: list[RuleHit] = field(default_factory=list)
    targets: tuple[str, ...] = ()
    reply: str | bool | None = None

    def explain(self) -> dict[str, Any]:
        """JSON-ready trace: every stage's verdict and reasons, every rule's hit or miss."""
        return {
            "state": self.state,
            "verdict": verdict_name(self.verdict),
            "stages": [r.to_json() for r in self.results],
            "rules": [h.to_json() for h in self.hits],
            "targets": list(self.targets),
        }


def _defaults(env: Envelope, default_queue: str) -> None:
    """Reset every field the pipeline owns, so a replayed envelope starts clean."""
    env["intent"] = "human"
    env["queue"] = default_queue
    env["tags"] = []
    env["priority"] = "normal"
    env["route"] = {"rule": None, "confidence": 0.0, "reasons": []}
    env["entities"] = {}
    env["thread"] = None
    env["duplicateOf"] = None
    env["quarantine"] = None


class PipelineRunner:
    """Runs the configured stages over envelopes; see the module docstring."""

    def __init__(
        self,
        cfg: Config,
        ports: PipelinePorts,
        *,
        stages: Mapping[str, Stage] | None = None,
    ) -> None:
        self.cfg = cfg
        self.ports = ports
        self.rules = load_rules(cfg)
        self._entity_patterns = build_entities(cfg.pipeline)
        self._stages = stages
        self.order = list(cfg.pipeline.stages)

    def stages(self) -> list[tuple[str, Stage | None]]:
        """The configured order with the stage registered under each name (None: not yet)."""
        known = self._stages if self._stages is not None else registry()
        return [(name, known.get(name)) for name in self.order]

    async def process(self, env: Envelope, *, mode: Mode = "ingest") -> Outcome:
        """Run the stages over ``env`` (filled in place); see `Outcome`."""
        msg_id = str(env.get("id") or "")
        trace_id = str(env.get("traceId") or "")

        def extra(stage: str, verdict: str, reason: str, **more: Any) -> dict[str, Any]:
            return log_fields(
                msg_id or None,
                trace_id or None,
                stage=stage,
                verdict=verdict,
                reason=reason,
                **more,
            )

        _defaults(env, self.cfg.pipeline.default_queue)
        ctx = Context(
            config=self.cfg.pipeline,
            root=self.cfg,
            ports=self.ports,
            rules=self.rules,
            msg_id=msg_id,
            mode=mode,
        )
        ctx.memo["entity_patterns"] = self._entity_patterns
        timeout = self.cfg.pipeline.stage_timeout or None
        verdict: Verdict | None = None
        for name, stage in self.stages():
            if stage is None:
                if name not in RESERVED_STAGES:
                    # check-config refuses these; reaching here means a stage was unregistered
                    log.warning(
                        "stage skipped",
                        extra=extra(
                            name, "skipped", "not registered", error="stage not registered"
                        ),
                    )
                else:
                    log.debug("stage skipped", extra=extra(name, "skipped", "not registered"))
                continue
            if name in ctx.skip:
                ctx.results.append(StageResult(name, "skipped", ["skipped by an earlier stage"]))
                continue
            started = time.perf_counter()
            try:
                verdict = await run_stage(stage, env, ctx, timeout)
            except TimeoutError:
                log.warning(
                    "stage failed",
                    extra=extra(name, "error", "timeout", error=f"timed out after {timeout}s"),
                )
                raise StageTimeout(f"stage {name} timed out after {timeout}s") from None
            except Exception as exc:
                # the traceback goes with the "processing failed" line of the ingest worker
                log.warning(
                    "stage failed",
                    extra=extra(name, "error", type(exc).__name__, error=describe_error(exc)),
                )
                raise
            notes = ctx.take_notes()
            result = StageResult(name, verdict_name(verdict), notes, time.perf_counter() - started)
            ctx.results.append(result)
            level = logging.DEBUG if verdict is None else logging.INFO
            if log.isEnabledFor(level):
                reason = verdict.reason if verdict is not None else "; ".join(notes[:3])
                log.log(level, "stage done", extra=extra(name, result.verdict, _short(reason)))
            if verdict is not None:
                break
        return self._outcome(env, ctx, verdict)

    def _outcome(self, env: Envelope, ctx: Context, verdict: Verdict | None) -> Outcome:
        view = EnvView(env)
        targets = ctx.targets if ctx.targets is not None else tenant_targets(self.cfg, view.tenant)
        intents = list(ctx.intents)

        def outcome(state: str) -> Outcome:
            return Outcome(
                state,
                intents,
                results=ctx.results,
                verdict=verdict,
                hits=ctx.hits or [],
                targets=targets,
                reply=ctx.reply,
            )

        if isinstance(verdict, Quarantine):
            env["quarantine"] = {"reason": verdict.reason, "detail": verdict.detail}
            intents.append(
                QuarantineIntent(
                    tenant=view.tenant, reason=verdict.reason, detail=verdict.detail, at=time.time()
                )
            )
            return outcome("quarantined")
        if isinstance(verdict, Stop):
            return outcome("processed")
        thread = env.get("thread")
        ordering = thread.get("id") if isinstance(thread, dict) else None
        intents.append(PublishIntent(targets=tuple(targets), ordering_key=ordering))
        return outcome("processed")


def _resume(coro: Coroutine[Any, Any, Any], first: Any) -> Generator[Any, Any, Any]:
    """Drive ``coro`` on from a suspension point it already reached (``first``).

    The same delegation ``yield from`` does: what it yields goes to the task, what the task
    sends or throws (a cancellation) goes back into it.
    """
    value = first
    while True:
        try:
            sent = yield value
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                value = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                value = coro.send(sent)
            except StopIteration as stop:
                return stop.value


class _Resumed:
    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        return _resume(self.coro, self.first)


async def run_stage(
    stage: Stage, env: Envelope, ctx: Context, timeout: float | None
) -> Verdict | None:
    """``stage.run`` under ``asyncio.timeout(timeout)``, paying for the timer only if needed.

    An asyncio timeout can only fire while the coroutine is suspended. Most stages finish
    without suspending (their lookups are synchronous key reads), so the stage is first run up
    to its first suspension point; only a stage that really waits on I/O continues under the
    timer. Arming a timer costs ~8 us, as much as several whole stages.
    """
    coro = stage.run(env, ctx)
    try:
        first = coro.send(None)
    except StopIteration as done:
        result: Verdict | None = done.value
        return result
    except BaseException:
        coro.close()
        raise
    async with asyncio.timeout(timeout):
        resumed: Verdict | None = await _Resumed(coro, first)
        return resumed


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class EmptyPorts:
    """`PipelinePorts` over no stored mail: for ``rules test``/``rules eval`` on loose files."""

    async def find_duplicate(self, tenant: str, key: str, since: float) -> DedupHit | None:
        return None

    async def find_threads(self, tenant: str, message_ids: Sequence[str]) -> list[ThreadRef]:
        return []

    async def find_thread_by_ticket(self, tenant: str, ticket: str) -> ThreadRef | None:
        return None

    async def message_seq(self, msg_id: str) -> int | None:
        return None

    async def get_envelope(self, msg_id: str) -> dict[str, Any]:
        return {}

    async def attachment_bytes(self, sha256: str) -> bytes | None:
        return None


def validate(cfg: Config, where: Callable[[str], str]) -> None:
    """The pipeline's config: stage names and order, rules and entity patterns, and that the
    reply templates the rules name exist (checked with the rest of ``[reply]``)."""
    run_checks((validate_stages, validate_rules, _validate_reply), cfg, where)


def _validate_reply(cfg: Config, where: Callable[[str], str]) -> None:
    try:
        templates = rule_templates(cfg, where)
    except ConfigError:
        templates = []  # a rule that does not load is reported by validate_rules
    reply_settings.validate(cfg, where, templates)


def rule_templates(cfg: Config, where: Callable[[str], str]) -> list[tuple[str, str | None]]:
    """(template, tenant) named by ``then.reply`` in the rules (tenant None: any tenant)."""
    out: list[tuple[str, str | None]] = []
    for rule in load_rules(cfg, where).rules:
        reply = rule.actions.reply
        if isinstance(reply, str):
            if rule.tenants:
                out.extend((reply, t) for t in sorted(rule.tenants))
            else:
                out.append((reply, None))
    return out


def validate_stages(cfg: Config, where: Callable[[str], str]) -> None:
    known = set(registry()) | RESERVED_STAGES
    for i, name in enumerate(cfg.pipeline.stages):
        if name not in known:
            raise ConfigError(
                f"{where('pipeline.stages')}: pipeline.stages[{i}] = {name!r}: expected one of "
                + ", ".join(sorted(known))
            )
    if len(set(cfg.pipeline.stages)) != len(cfg.pipeline.stages):
        raise ConfigError(
            f"{where('pipeline.stages')}: pipeline.stages = {cfg.pipeline.stages!r}: expected each stage once"
        )
    for name in REQUIRED_STAGES:
        if name not in cfg.pipeline.stages:
            raise ConfigError(
                f"{where('pipeline.stages')}: pipeline.stages = {cfg.pipeline.stages!r}: expected"
                f" {name!r} in the list (without it, mail that auth policy or the scan holds"
                " would be delivered)"
            )
