"""The ingest worker: spooled message -> envelope -> pipeline -> one store transaction.

It picks up every spooled, unprocessed message of its partition (``seq % workers``), oldest
first, also those left over by a crash: the spool is the source of truth. Processing is
idempotent — ``store.complete`` ignores a message that is no longer spooled — so a message
whose run was cut short is simply run again. A run that raises is recorded as a failed
attempt and retried; after ``pipeline.max_attempts`` the message goes to the ``dead`` state
(Mailman's shunt queue) where ``mailgate replay`` can bring it back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from mailgate import metrics
from mailgate.envelope import Envelope
from mailgate.logs import get_logger, log_fields
from mailgate.store.base import Intent, MessageStore, SpooledMessage

log = get_logger("pipeline")

ParseFn = Callable[..., Envelope]


@dataclass
class Outcome:
    """What a pipeline run decided: the message state and the writes to apply with it."""

    state: str = "processed"
    intents: list[Intent] = field(default_factory=list)


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
    if parsed.get("parseErrors"):
        metrics.PARSE_ERRORS.inc()
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
    try:
        from mailgate.auth.checker import filter_headers
    except ImportError:  # pragma: no cover - auth package always ships with mailgate
        return headers
    authserv_id = authentication_results.split(";", 1)[0].strip()
    return filter_headers(headers, authserv_id, authentication_results)


class IngestWorker:
    def __init__(
        self,
        store: MessageStore,
        processor: Processor,
        *,
        parse: ParseFn,
        blob_sink: Callable[[bytes], str] | None = None,
        batch_size: int = 64,
        poll_interval: float = 0.2,
        max_attempts: int = 5,
        worker: int = 0,
        workers: int = 1,
        on_processed: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.processor = processor
        self.parse = parse
        self.blob_sink = blob_sink
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.max_attempts = max_attempts
        self.worker = worker
        self.workers = workers
        self.on_processed = on_processed
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """New mail was spooled: look now instead of at the next poll."""
        self._wake.set()

    async def run_once(self) -> int:
        """Process one batch; returns how many messages were handled."""
        batch = await self.store.claim_spooled(
            self.batch_size, worker=self.worker, workers=self.workers
        )
        for msg in batch:
            await self.process_one(msg)
            # Let SMTP sessions and deliveries in the same loop breathe between messages.
            await asyncio.sleep(0)
        return len(batch)

    async def process_one(self, msg: SpooledMessage) -> None:
        try:
            env = build_envelope(msg, self.parse, self.blob_sink)
            outcome = await self.processor.process(env)
            await self.store.complete(msg.id, env, list(outcome.intents), state=outcome.state)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            log.exception("processing failed", extra=log_fields(msg.id, msg.trace_id))
            try:
                state = await self.store.fail(msg.id, reason, max_attempts=self.max_attempts)
            except Exception:
                log.exception(
                    "could not record the failure", extra=log_fields(msg.id, msg.trace_id)
                )
                return
            metrics.INGEST_PROCESSED.labels(
                outcome="failed" if state == "spooled" else "dead"
            ).inc()
            if state == "spooled":
                await asyncio.sleep(min(5.0, 0.1 * (msg.attempts + 1)))
            return
        metrics.INGEST_PROCESSED.labels(outcome=outcome.state).inc()
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

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set; sleeps only when there is nothing to do."""
        while not stop.is_set():
            try:
                n = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ingest batch failed")
                n = 0
                await asyncio.sleep(self.poll_interval)
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
