"""The stage protocol, the per-run context and the verdicts that end a run.

A stage is a small object with a ``name``, a ``description`` and one coroutine
``run(env, ctx) -> Verdict | None``. It reads the envelope and the read-only ports on the
context, writes its findings into the envelope (the fields it owns) and into ``ctx`` (notes,
intents, quarantine candidates), and returns ``None`` to go on or a verdict to end the run.
Stages never touch SQL; writes are intents the runner hands to the store, applied in the
transaction that stores the envelope (decide, then act).

This module owns no stage; the registry of built-in stages lives in ``pipeline.stages`` and
the order in ``PipelineConfig.stages``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from mailgate.config import Config, PipelineConfig
from mailgate.envelope import Envelope
from mailgate.envelope_view import EnvView
from mailgate.store.base import Intent
from mailgate.store.pipeline import DedupHit, PipelinePorts, ThreadRef

if TYPE_CHECKING:
    from mailgate.pipeline.rules import RuleHit, RuleSet


# --------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class Stop:
    """End the run without delivery (``disposition``: ``duplicate``, ``drop``)."""

    disposition: str
    reason: str


@dataclass(frozen=True)
class Quarantine:
    """End the run and hold the message for an operator; it is stored, not delivered."""

    reason: str
    detail: str = ""


Verdict = Stop | Quarantine


def verdict_name(verdict: Verdict | None) -> str:
    if verdict is None:
        return "continue"
    if isinstance(verdict, Quarantine):
        return "quarantine"
    return verdict.disposition


# --------------------------------------------------------------------------- context


Mode = Literal["ingest", "replay", "release", "dry-run"]
"""How the run was started.

``ingest``: a freshly spooled message (its index rows do not exist yet). ``replay``: a stored
message run again with the current rules (its own index rows exist; no index intents).
``release``: an operator released it from quarantine. ``dry-run``: ``rules test``/``rules eval``
on a file that is not stored at all.
"""


@dataclass
class StageResult:
    """What one stage decided and why (Haraka's results, Mailman's rule hits)."""

    stage: str
    verdict: str
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "verdict": self.verdict, "reasons": list(self.reasons)}


@dataclass
class Context:
    """Everything a run shares between stages (Mailman's msgdata, typed)."""

    config: PipelineConfig
    root: Config
    """The whole config, for stages that need another section (``respond`` reads ``reply``)."""
    ports: PipelinePorts
    rules: RuleSet
    msg_id: str
    mode: Mode = "ingest"
    results: list[StageResult] = field(default_factory=list)
    intents: list[Intent] = field(default_factory=list)
    skip: set[str] = field(default_factory=set)
    quarantine: list[Quarantine] = field(default_factory=list)
    """Candidates found along the way (scan findings, auth, rules); the quarantine stage decides."""
    hits: list[RuleHit] | None = None
    """Every rule's evaluation (hit or miss with reasons), set by ``classify``."""
    targets: tuple[str, ...] | None = None
    """Webhook target ids for this message, set by ``route`` (None: the tenant's targets)."""
    reply: str | bool | None = None
    """The rules' auto-reply decision: a template name, False for none, None for the default."""
    thread: ThreadRef | None = None
    duplicate: DedupHit | None = None
    memo: dict[str, Any] = field(default_factory=dict)
    """Per-run caches shared between stages (e.g. extracted entities used by rule matchers)."""
    _notes: list[str] = field(default_factory=list)

    @property
    def stored(self) -> bool:
        """True when the message's own index rows already exist (replay, release)."""
        return self.mode in ("replay", "release")

    def view(self, env: Envelope) -> EnvView:
        """One `EnvView` per run (its lower-cased header map is built once for all stages)."""
        view = self.memo.get("view")
        if view is None or view.env is not env:
            view = EnvView(env)
            self.memo["view"] = view
        result: EnvView = view
        return result

    def note(self, reason: str) -> None:
        """Record why the current stage decided what it did (goes to its `StageResult`)."""
        self._notes.append(reason)

    def take_notes(self) -> list[str]:
        notes, self._notes = self._notes, []
        return notes


# --------------------------------------------------------------------------- stage


class Stage(Protocol):
    """One step of the pipeline (Mailman's handler, Haraka's plugin hook).

    ``name`` is unique and kebab-case; it is what ``PipelineConfig.stages`` lists.
    ``run`` fills the envelope fields the stage owns, may add notes, intents and quarantine
    candidates to ``ctx``, and returns ``None`` to continue or a `Verdict` to end the run. It must
    not raise for bad input (mail is hostile); an exception fails the whole run, which the
    ingest worker retries and eventually dead-letters.
    """

    name: str
    description: str

    async def run(self, env: Envelope, ctx: Context) -> Verdict | None: ...
