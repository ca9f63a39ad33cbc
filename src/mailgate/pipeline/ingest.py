"""The ingest worker: spooled message -> envelope -> pipeline -> one store transaction.

It claims spooled, unprocessed messages with a lease (``store.ports.SpoolClaims``), oldest
first, also those left over by a crash: the spool is the source of truth. Claims let any
number of workers on any number of nodes share one spool; a worker that dies leaves its
messages to the others when the lease expires (at once on its own node: see ``start``). Processing is
idempotent — ``store.complete`` ignores a message that is no longer spooled — so a message
whose run was cut short is simply run again. A run that raises is recorded as a failed
attempt and retried; after ``pipeline.max_attempts`` the message goes to the ``dead`` state
(Mailman's shunt queue) where ``mailgate replay`` can bring it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from mailgate import metrics
from mailgate.auth.checker import filter_headers
from mailgate.backoff import LoopBackoff
from mailgate.envelope import AuthResult, Envelope
from mailgate.logs import describe_error, get_logger, log_context, log_fields
from mailgate.store.base import Intent, MessageStore, SpooledMessage, StoreError
from mailgate.store.ports import (
    DEFAULT_SPOOL_LEASE,
    SpoolClaims,
    lease_owner,
    owner_is_dead_local,
    pid_alive,
)

log = get_logger("pipeline")

ParseFn = Callable[..., Envelope]


@dataclass
class Outcome:
    """What a pipeline run decided: the message state and the writes to apply with it."""

    state: str = "processed"
    intents: list[Intent] = field(default_factory=list)


MAX_IN_FLIGHT = 32
"""Commits one worker keeps in flight at most."""


def store_trouble(exc: BaseException) -> bool:
    """Whether ``exc`` says the store is unavailable (disk full, locked, I/O error), as
    opposed to something wrong with one message: the worker then backs off and leaves the
    message spooled, uncounted, instead of spending its attempts on a disk that is full."""
    # The writer raises a plain StoreError when a whole commit fails; a statement inside one
    # message's write that hits the full disk raises the driver's OperationalError. The
    # StoreError subclasses (NotFound, DedupConflict) are about one message.
    return type(exc) is StoreError or isinstance(exc, sqlite3.OperationalError)


def _refers_to(env: Envelope, pending: list[_Pending]) -> bool:
    """Whether ``env`` names (replies to, or repeats) the Message-ID of an uncommitted message."""
    ids = {p.env.get("messageId") for p in pending}
    ids.discard(None)
    if not ids:
        return False
    if env.get("messageId") in ids or env.get("inReplyTo") in ids:
        return True
    refs = env.get("references") or []
    return any(r in ids for r in refs)


@dataclass
class _Pending:
    """A message whose commit is in flight."""

    msg: SpooledMessage
    env: Envelope
    outcome: Any
    commit: asyncio.Future[None]


class Processor(Protocol):
    async def process(self, env: Envelope) -> Any:
        """Fill the pipeline fields of ``env`` in place; return an object with .state, .intents."""


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


AUTH_KEYS = ("spf", "dkim", "dmarc", "arc", "authenticationResults", "authAction")


def build_envelope(
    msg: SpooledMessage, parse: ParseFn, blob_sink: Callable[[bytes], str] | None
) -> Envelope:
    """Parse the raw bytes and add what the SMTP session knew (ids, session facts, auth)."""
    started = time.perf_counter()
    parsed = parse(msg.raw, blob_sink=blob_sink)
    metrics.PARSE_SECONDS.observe(time.perf_counter() - started)
    parse_errors = parsed.get("parseErrors") or []
    if parse_errors:
        metrics.PARSE_ERRORS.inc()
        # expected with real-world mail (a bad charset, a broken header): one warning that says
        # what, never a traceback; the envelope keeps every error for the application
        first = parse_errors[0] if isinstance(parse_errors[0], dict) else {}
        log.warning(
            "message partly unreadable",
            extra=log_fields(
                msg.id,
                msg.trace_id,
                error=f"{first.get('code', 'parse')}: {first.get('message', '')}",
                parse_errors=len(parse_errors),
                codes=sorted({str(e.get("code")) for e in parse_errors if isinstance(e, dict)}),
            ),
        )
    env: Envelope = {
        "id": msg.id,
        "timestamp": iso(msg.received_at),
        "tenant": msg.tenant,
        "traceId": msg.trace_id,
    }
    env.update(parsed)
    env["envelope"] = {
        "mailFrom": msg.mail_from,
        "rcptTo": list(msg.rcpt_to),
        "clientIp": msg.client_ip,
        "helo": msg.helo,
        "tls": msg.tls,
    }
    auth = msg.auth or {}
    for key in AUTH_KEYS:
        env[key] = auth.get(key)
    ar = auth.get("authenticationResults")
    if ar:
        env["headers"] = _header_view(env.get("headers") or {}, ar)
    return env


def _header_view(headers: dict[str, Any], authentication_results: str) -> dict[str, Any]:
    """Our Authentication-Results first; incoming ones claiming our authserv-id removed."""
    authserv_id = authentication_results.split(";", 1)[0].strip()
    return filter_headers(headers, authserv_id, authentication_results)


class IngestStore(MessageStore, SpoolClaims, Protocol):
    """What the ingest worker asks of storage."""


class IngestWorker:
    def __init__(
        self,
        store: IngestStore,
        processor: Processor,
        *,
        parse: ParseFn,
        blob_sink: Callable[[bytes], str] | None = None,
        batch_size: int = 64,
        poll_interval: float = 0.2,
        max_attempts: int = 5,
        owner: str | None = None,
        lease: float = DEFAULT_SPOOL_LEASE,
        node: str | None = None,
        on_processed: Callable[[], None] | None = None,
        auth: Any = None,
        skip: int = 0,
    ) -> None:
        self.store = store
        self.processor = processor
        self.parse = parse
        self.blob_sink = blob_sink
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.max_attempts = max_attempts
        self.node = node or socket.gethostname()
        self.owner = owner or lease_owner(self.node)
        self.lease = lease
        self.on_processed = on_processed
        self.auth = auth
        self.skip = skip
        self._wake = asyncio.Event()
        self.backoff = LoopBackoff(log, "ingest", expected=(StoreError,))

    def wake(self) -> None:
        """New mail was spooled: look now instead of at the next poll. A worker that takes
        only a backlog (``skip``) is not woken by each message: it looks every poll."""
        if not self.skip:
            self._wake.set()

    async def run_once(self) -> int:
        """Process one batch; returns how many messages were handled.

        Commits are pipelined: message *n+1* is parsed and run through the pipeline while the
        commits of earlier messages are in flight, and the single writer folds those commits
        into shared transactions. A message that could depend on an uncommitted one — it
        names its Message-ID in In-Reply-To/References (threading), or repeats it (dedup) —
        first waits for every commit in flight, so lookups always see the messages it refers
        to. Other dedup races (same content hash) are caught inside the commit by the dedup
        index and retried. Commits land in submission order (one writer, FIFO).
        """
        batch = await self.store.claim_spooled(
            self.batch_size, owner=self.owner, lease=self.lease, skip=self.skip
        )
        if self.auth is not None and any(m.auth and m.auth.get("deferred") for m in batch):
            # Concurrently: a slow DNS answer for one sender must not hold up the batch.
            batch = list(await asyncio.gather(*(self._authenticate(m) for m in batch)))
        prefetch = getattr(self.processor, "prefetch", None)
        if prefetch is not None and batch:
            prefetch(batch)  # stages that call a daemon (clamd, rspamd) start the whole batch now
        pending: list[_Pending] = []
        try:
            for msg in batch:
                with log_context(msg.id, msg.trace_id):
                    await self._run_one(msg, pending)
        except Exception:
            with contextlib.suppress(Exception):
                await self._settle_all(pending)  # what was committed is logged and counted
            with contextlib.suppress(Exception):
                await self.store.release_spool_leases(self.owner)  # the rest, for a retry now
            raise
        await self._settle_all(pending)
        return len(batch)

    async def _run_one(self, msg: SpooledMessage, pending: list[_Pending]) -> None:
        """Parse and run one message of the batch; its commit joins ``pending``."""
        try:
            env: Envelope | BaseException = build_envelope(msg, self.parse, self.blob_sink)
        except Exception as exc:
            env = exc
        if pending and (
            isinstance(env, BaseException)
            or len(pending) >= MAX_IN_FLIGHT
            or _refers_to(env, pending)
        ):
            await self._settle_all(pending)
        if isinstance(env, BaseException):
            await self._failed(msg, env)
            return
        try:
            outcome = await self.processor.process(env)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._settle_all(pending)
            await self._failed(msg, exc)
            return
        commit = asyncio.ensure_future(
            self.store.complete(msg.id, env, list(outcome.intents), state=outcome.state)
        )
        pending.append(_Pending(msg, env, outcome, commit))

    async def _settle_all(self, pending: list[_Pending]) -> None:
        """Wait for every commit in flight; a store failure is raised after all settled."""
        trouble: BaseException | None = None
        for p in pending:
            try:
                with log_context(p.msg.id, p.msg.trace_id):
                    await self._settle(p)
            except Exception as exc:
                if trouble is None:
                    trouble = exc
        pending.clear()
        if trouble is not None:
            raise trouble

    async def _authenticate(self, msg: SpooledMessage) -> SpooledMessage:
        """Finish sender authentication the SMTP front deferred (DKIM, ARC, DMARC).

        The front checks SPF at MAIL FROM and, unless a policy must act before the 250
        (``reject``, ``defer``), leaves the rest to the worker: see ``SmtpHandler.auth_inline``.
        """
        auth = msg.auth
        if self.auth is None or not auth or not auth.get("deferred"):
            return msg
        with log_context(msg.id, msg.trace_id):
            return await self._authenticate_deferred(msg, auth)

    async def _authenticate_deferred(
        self, msg: SpooledMessage, auth: dict[str, Any]
    ) -> SpooledMessage:
        assert self.auth is not None
        spf_json = auth.get("spf")
        spf = AuthResult.from_json(spf_json) if isinstance(spf_json, dict) else None
        started = time.perf_counter()
        try:
            report = await self.auth.check_message(
                msg.raw,
                client_ip=msg.client_ip,
                helo=msg.helo,
                mail_from=msg.mail_from,
                spf=spf,
                msg_id=msg.id,
            )
        except Exception:
            # The checker never raises by contract; if it does, keep the mail and say why.
            log.exception("auth check failed", extra=log_fields(msg.id, msg.trace_id))
            failed = dict(auth)
            failed.pop("deferred", None)
            failed["authAction"] = {"action": "accept", "reason": "auth error", "would": None}
            return dataclasses.replace(msg, auth=failed)
        metrics.AUTH_SECONDS.observe(time.perf_counter() - started)
        data = report.to_json()
        metrics.record_auth_action(data)
        action = data.get("authAction")
        if isinstance(action, dict) and action.get("action") in ("reject", "defer"):
            # Too late to refuse: the message was accepted. Record it; quarantine instead.
            action = dict(action)
            action["would"] = action.get("would") or action["action"]
            action["action"] = "quarantine" if action["action"] == "reject" else "accept"
            data["authAction"] = action
        return dataclasses.replace(msg, auth=data)

    async def process_one(self, msg: SpooledMessage) -> None:
        """Parse, run the pipeline and commit one message (used by replay and tests)."""
        with log_context(msg.id, msg.trace_id):
            await self._process_one(msg)

    async def _process_one(self, msg: SpooledMessage) -> None:
        msg = await self._authenticate(msg)
        try:
            env = build_envelope(msg, self.parse, self.blob_sink)
            outcome = await self.processor.process(env)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(msg, exc)
            return
        commit = asyncio.ensure_future(
            self.store.complete(msg.id, env, list(outcome.intents), state=outcome.state)
        )
        await self._settle(_Pending(msg, env, outcome, commit))

    async def _settle(self, pending: _Pending) -> None:
        msg, env, outcome = pending.msg, pending.env, pending.outcome
        try:
            await pending.commit
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if store_trouble(exc):
                raise  # the store, not the message: the loop backs off, the message waits
            await self._failed(msg, exc)
            return
        metrics.INGEST_PROCESSED.labels(outcome=outcome.state).inc()
        if outcome.state == "quarantined":
            held = env.get("quarantine")
            reason = held.get("reason") if isinstance(held, dict) else None
            metrics.QUARANTINED.labels(reason=str(reason or "unknown")).inc()
        log.info(
            "processed",
            extra=log_fields(
                msg.id,
                msg.trace_id,
                state=outcome.state,
                queue=env.get("queue"),
                intents=len(outcome.intents),
            ),
        )
        if self.on_processed is not None:
            self.on_processed()

    async def _failed(self, msg: SpooledMessage, exc: BaseException) -> None:
        """Record a failed attempt: retried later, dead after ``max_attempts``."""
        reason = describe_error(exc)
        log.error(
            "processing failed",
            exc_info=exc,
            extra=log_fields(msg.id, msg.trace_id, attempt=msg.attempts + 1),
        )
        try:
            state = await self.store.fail(msg.id, reason, max_attempts=self.max_attempts)
        except Exception as store_exc:
            if store_trouble(store_exc):
                raise  # the loop backs off; the attempt is counted once the store works
            log.exception("could not record the failure", extra=log_fields(msg.id, msg.trace_id))
            return
        metrics.INGEST_PROCESSED.labels(outcome="failed" if state == "spooled" else "dead").inc()
        if state == "spooled":
            await asyncio.sleep(min(5.0, 0.1 * (msg.attempts + 1)))

    async def release_dead_local(self) -> int:
        """Give back the spool leases of this node's workers that no longer run (a crash, a
        SIGKILL), so their messages are processed now rather than when the lease expires."""
        released = 0
        for owner in await self.store.spool_lease_owners():
            if owner != self.owner and owner_is_dead_local(owner, self.node, pid_alive):
                released += await self.store.release_spool_leases(owner)
        if released:
            log.info("released messages of a stopped worker", extra=log_fields(count=released))
        return released

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set; sleeps only when there is nothing to do."""
        with contextlib.suppress(StoreError):
            await self.release_dead_local()
        try:
            await self._run(stop)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.store.release_spool_leases(self.owner))

    async def _run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                n = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A failing store (disk full) must not spin: wait longer on each failure.
                delay = self.backoff.failed(exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                continue
            self.backoff.succeeded()
            if n:
                continue
            self._wake.clear()
            waiter = asyncio.ensure_future(self._wake.wait())
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait(
                    {waiter, stopper},
                    timeout=self.poll_interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                waiter.cancel()
                stopper.cancel()
