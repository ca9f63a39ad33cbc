"""The shared shape of the stages that ask a scanning daemon about the raw message.

Why: the antivirus (clamd) and spam (rspamd) stages both start their daemon calls ahead for
the claimed batch, fall back to a call of their own when nothing was started (replay, release,
a test), do nothing without an engine, and turn a daemon failure into the stage's failure
policy. That flow is kept here once; each stage says how to call its daemon, what the envelope
records on an error, and what a verdict means.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from mailgate.config import OnError
from mailgate.envelope import Envelope
from mailgate.pipeline.base import Context, Verdict
from mailgate.pipeline.lifecycle import Ahead, RawSource, apply_policy
from mailgate.scanners.base import ScanError
from mailgate.store.base import SpooledMessage


class ScannerConfig(Protocol):
    """What the shared flow reads of a scanner's config section."""

    @property
    def on_error(self) -> OnError: ...


CfgT = TypeVar("CfgT", bound=ScannerConfig)
ClientT = TypeVar("ClientT")
VerdictT = TypeVar("VerdictT")


class ScannerStage(ABC, Generic[CfgT, ClientT, VerdictT]):
    """A stage over one daemon client; without a client (engine ``none``) it only notes so."""

    name: str
    """The stage name; also the envelope field it writes and the word in its notes."""

    def __init__(
        self, cfg: CfgT, client: ClientT | None = None, raw: RawSource | None = None
    ) -> None:
        self.cfg = cfg
        self.client = client
        self.raw = raw
        self.on_error: OnError = cfg.on_error
        self.ahead = Ahead()

    # ------------------------------------------------------------------ what each stage says (abstract)

    @abstractmethod
    def _ahead_call(self, client: ClientT, msg: SpooledMessage) -> Callable[[], Awaitable[Any]]:
        """The daemon call for a claimed message, from the spool row's facts."""

    @abstractmethod
    def _call(self, client: ClientT, raw: bytes, env: Envelope, msg_id: str) -> Awaitable[Any]:
        """The daemon call made during the run, from the envelope's facts."""

    @abstractmethod
    def _error_field(self, error: str) -> dict[str, Any]:
        """The envelope field when the daemon failed."""

    @abstractmethod
    async def _judge(self, env: Envelope, ctx: Context, verdict: VerdictT) -> Verdict | None:
        """Record the verdict in the envelope and hold or note the message."""

    # ------------------------------------------------------------------ the shared flow

    def prefetch(self, batch: Sequence[SpooledMessage]) -> None:
        """Start the daemon calls for the claimed batch (see `lifecycle.Ahead`)."""
        client = self.client
        if client is None:
            return
        self.ahead.clear()
        for msg in batch:
            self.ahead.start(msg.id, self._ahead_call(client, msg))

    async def _verdict(self, env: Envelope, msg_id: str) -> VerdictT:
        assert self.client is not None and self.raw is not None
        started = self.ahead.take(msg_id)
        if started is not None:
            verdict: VerdictT = await started
            return verdict
        made: VerdictT = await self._call(self.client, await self.raw(msg_id), env, msg_id)
        return made

    async def run(self, env: Envelope, ctx: Context) -> Verdict | None:
        if self.client is None or self.raw is None:
            ctx.note(f"no {self.name} engine configured")
            return None
        try:
            verdict = await self._verdict(env, ctx.msg_id)
        except ScanError as exc:
            env[self.name] = self._error_field(str(exc))
            return apply_policy(self.on_error, self.name, str(exc), ctx, permanent=exc.permanent)
        return await self._judge(env, ctx, verdict)
