"""The webhook delivery worker: claim outbox rows, sign, POST, then record and reschedule or DLQ.

One dispatcher task per worker claims due rows per target (up to the target's concurrency
limit, through its circuit breaker) and starts one task per attempt; the store's claim keeps
per-thread order (a later event of a thread waits until the earlier one is settled). Outcomes:

- 2xx: delivered (the event counts as consumed, in the polling API too);
- 408, 429, 5xx, timeouts and connection errors: retried on the ``RetrySchedule``, or after
  the receiver's ``Retry-After`` when it sends one; to the DLQ once the schedule is spent;
- 410 Gone: the target is disabled until an operator runs ``mailgate dlq enable-target``;
  its rows wait;
- any other status (3xx included: redirects are never followed, a moved receiver must be
  reconfigured): retried ``client_error_retries`` times, then to the DLQ.

Every attempt is recorded (time, status, latency, error). Delivery is at least once: a crash
between the POST and the record redelivers with the same ``webhook-id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from mailgate import __version__, jsontext
from mailgate.backoff import LoopBackoff
from mailgate.config import DeliveryConfig, WebhookConfig
from mailgate.delivery import settings as _settings  # noqa: F401  (config validator)
from mailgate.delivery.breaker import CircuitBreaker
from mailgate.delivery.process_metrics import MetricsPublisher
from mailgate.delivery.signing import Signer
from mailgate.logs import RateLimitedLog, describe_error, log_fields
from mailgate.metrics import REGISTRY
from mailgate.retry import RetrySchedule, parse_retry_after
from mailgate.store.base import StoreError
from mailgate.store.delivery import AttemptOutcome, DeliveryStore, OutboxItem, webhook_target_id
from mailgate.store.notify import OUTBOX
from mailgate.store.ports import lease_owner, node_name, owner_is_dead_local, pid_alive

log = logging.getLogger("mailgate.delivery")

USER_AGENT = f"mailgate-webhook/{__version__}"
RETRYABLE_STATUS = frozenset({408, 429})
STOP_GRACE = 3.0
CHANGE_CHECK = 0.05  # seconds between checks for commits by other processes while idle
LEASE_MARGIN = 30.0


def encode_payload(env: dict[str, Any]) -> bytes:
    """The exact body bytes that are signed and sent (compact UTF-8 JSON; lone surrogates from a
    broken charset make it escaped ASCII rather than invalid UTF-8)."""
    return jsontext.dumps_utf8(env)


def payload_for(item: OutboxItem, urls: EnvelopeSigner) -> bytes:
    """The body of one delivery: the stored envelope JSON as it is, unless it has attachments.

    The store keeps the envelope as compact UTF-8 JSON, the same encoding as `encode_payload`,
    so without attachment URLs to sign (no ``"attachments":[{`` anywhere in it: an attachment is
    always an object) those bytes are the body. With attachments, each URL is signed afresh
    (they expire) and the envelope is encoded again.
    """
    text = item.envelope_json
    if '"attachments":[{' not in text:
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            pass  # a lone surrogate: encode_payload escapes it
    return encode_payload(urls.sign_envelope(item.envelope))


class EnvelopeSigner(Protocol):
    """Fills ``attachments[].url`` with signed URLs (``api.urls.AttachmentUrlSigner``)."""

    def sign_envelope(self, env: dict[str, Any]) -> dict[str, Any]: ...


@dataclass
class _Target:
    id: str
    cfg: WebhookConfig
    signer: Signer
    breaker: CircuitBreaker
    inflight: set[asyncio.Task[None]] = field(default_factory=set)


class WebhookWorker:
    """Delivers the webhook outbox; ``start()`` spawns its tasks, ``stop()`` ends them."""

    def __init__(
        self,
        store: DeliveryStore,
        webhooks: list[WebhookConfig],
        cfg: DeliveryConfig,
        urls: EnvelopeSigner,
        *,
        node: str | None = None,
        follow_others: bool = True,
        skip: int = 0,
    ) -> None:
        self.store = store
        self.cfg = cfg
        self.urls = urls
        self.follow_others = follow_others
        """Also wake for events other processes publish (``change_counter``), not only for
        this process's own and every ``poll_interval``: the first ingest worker does; backlog
        workers deliver what they processed themselves, and stay idle while there is none."""
        self.skip = skip
        """Due deliveries left to the other workers (``ingest.backlog_per_worker`` times the
        worker's index): a backlog worker delivers only what waits beyond them, so at a
        trickle the first worker delivers alone and claims do not contend."""
        self.schedule = RetrySchedule.parse(cfg.retry_schedule, jitter=cfg.jitter)
        self.targets: dict[str, _Target] = {}
        for w in webhooks:
            if not w.enabled:
                continue
            tid = webhook_target_id(w.name, w.url)
            self.targets[tid] = _Target(
                tid,
                w,
                Signer(w.secrets),
                CircuitBreaker(cfg.breaker_threshold, cfg.breaker_cooldown),
            )
        self.node = node_name(store, node)  # ``[store] node``: distinct per node on one host
        self.owner = lease_owner(self.node)
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._waker: Any = None
        self._disabled: dict[str, str] = {}
        self._disabled_read_at = 0.0
        self._stopping = False
        self._metrics = MetricsPublisher(store, REGISTRY, node=self.node)
        self._backoff = LoopBackoff(log, "webhook dispatch", expected=(StoreError,))
        self._limited = RateLimitedLog(log)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        # this worker process's other metrics (parse, auth, pipeline) reach the front's /metrics
        await self._metrics.start()
        if not self.targets:
            log.info("no webhook targets configured: events are served by the polling API only")
            return
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        self._wake = wake

        def waker() -> None:
            loop.call_soon_threadsafe(wake.set)

        self._waker = waker
        self.store.notifier.subscribe(OUTBOX, waker)
        limit = sum(max(1, t.cfg.max_concurrency) for t in self.targets.values()) or 1
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit, limit_per_host=0),
            headers={"User-Agent": USER_AGENT},
            # per-attempt timeouts are set per request from the target's config
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=False,
        )
        self._stopping = False
        await self._recover_leases()
        self._task = asyncio.create_task(self._dispatch(), name="mailgate-webhook-dispatch")
        log.info(
            "webhook worker started",
            extra=log_fields(targets=len(self.targets), attempts=self.schedule.attempts),
        )

    async def _recover_leases(self) -> None:
        """Release leases of this node's workers that no longer run (a crash, a SIGKILL), so
        their deliveries go out now rather than when the lease expires. Another node's leases
        are left to expire: its pids are not ours to judge, even on the same host."""
        for owner in await self.store.lease_owners():
            if not owner_is_dead_local(owner, self.node, pid_alive):
                continue
            n = await self.store.release_leases(owner)
            log.info("released deliveries of a stopped worker", extra=log_fields(count=n))

    async def stop(self) -> None:
        self._stopping = True
        if self._waker is not None:
            self.store.notifier.unsubscribe(OUTBOX, self._waker)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        inflight = [t for target in self.targets.values() for t in target.inflight]
        if inflight:
            _, pending = await asyncio.wait(inflight, timeout=STOP_GRACE)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        try:
            released = await asyncio.wait_for(self.store.release_leases(self.owner), 2.0)
            if released:
                log.info("released unfinished deliveries", extra=log_fields(count=released))
        except (StoreError, TimeoutError) as exc:
            log.warning(
                "could not release delivery leases; they expire on their own",
                extra=log_fields(error=describe_error(exc)),
            )
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self._metrics.stop()

    def wake(self) -> None:
        """Look for due rows now (new events, an operator retry)."""
        if self._wake is not None:
            self._wake.set()

    # the ingest worker's ``on_processed`` hook (``app.py``)
    notify = wake

    # ------------------------------------------------------------------ dispatch

    async def _refresh_disabled(self) -> None:
        now = time.monotonic()
        if now - self._disabled_read_at >= self.cfg.poll_interval:
            self._disabled = await self.store.disabled_targets()
            self._disabled_read_at = now

    async def _claim_round(self) -> int:
        await self._refresh_disabled()
        claimed = 0
        for target in self.targets.values():
            if target.id in self._disabled:
                continue
            free = max(1, target.cfg.max_concurrency) - len(target.inflight)
            free = target.breaker.allowance(free)
            if free <= 0:
                continue
            lease = target.cfg.timeout + LEASE_MARGIN
            items = await self.store.claim_outbox(
                target.id, free, owner=self.owner, lease=lease, skip=self.skip
            )
            for item in items:
                target.breaker.started()
                task = asyncio.create_task(self._attempt(target, item))
                target.inflight.add(task)
                task.add_done_callback(self._attempt_done(target))
            claimed += len(items)
        return claimed

    def _attempt_done(self, target: _Target) -> Any:
        def done(task: asyncio.Task[None]) -> None:
            target.inflight.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.error(
                    "delivery attempt crashed",
                    exc_info=task.exception(),
                    extra=log_fields(target=target.id),
                )
            if self._wake is not None:
                self._wake.set()

        return done

    async def _next_delay(self) -> float:
        delay = self.cfg.poll_interval
        active = [t for t in self.targets.values() if t.id not in self._disabled]
        for t in active:
            if t.breaker.state == CircuitBreaker.OPEN:
                delay = min(delay, max(0.01, t.breaker.reopens_in()))
        due = await self.store.next_due_at([t.id for t in active])
        if due is not None:
            wait = due - time.time()
            if wait > 0:
                delay = min(delay, wait)
        return max(0.005, delay)

    async def _dispatch(self) -> None:
        assert self._wake is not None
        while not self._stopping:
            self._wake.clear()
            version: int | None = None
            try:
                if self.follow_others:
                    version = await self.store.change_counter()
                claimed = await self._claim_round()
                self._backoff.succeeded()
                if claimed:
                    continue
                delay = await self._next_delay()
            except StoreError as exc:
                # disk full, locked: wait longer each time, log sparingly (backoff.py)
                delay = self._backoff.failed(exc)
                version = None
            await self._idle(delay, version)

    async def _idle(self, delay: float, version: int | None) -> None:
        """Wait ``delay``, or less: until woken in-process, or until another process (an
        ingest worker, the ``dlq`` CLI) committed to the store, which the cheap
        ``change_counter`` shows; so events published elsewhere leave without a full poll."""
        assert self._wake is not None
        deadline = time.monotonic() + delay
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(remaining, CHANGE_CHECK))
                return
            if version is not None:
                try:
                    if await self.store.change_counter() != version:
                        return
                except StoreError:
                    version = None

    # ------------------------------------------------------------------ one attempt

    async def _attempt(self, target: _Target, item: OutboxItem) -> None:
        extra = log_fields(item.msg_id, item.trace_id, event_id=item.event_id, target=target.id)
        if item.acked_by and item.acked_by.startswith("api"):
            await self._finish(target, item, AttemptOutcome("skipped", error="acked via API"))
            log.info("delivery skipped: already acknowledged through the API", extra=extra)
            return
        if item.event_type not in target.cfg.events:
            await self._finish(
                target, item, AttemptOutcome("skipped", error=f"target takes no {item.event_type}")
            )
            return
        body = payload_for(item, self.urls)
        timestamp = int(time.time())
        headers = target.signer.headers(item.event_id, timestamp, body)
        headers["Content-Type"] = "application/json"
        headers["X-Mailgate-Trace-Id"] = item.trace_id or item.event_id
        headers["X-Mailgate-Event-Type"] = item.event_type
        headers["X-Mailgate-Attempt"] = str(item.attempts + 1)
        status: int | None = None
        retry_after: str | None = None
        error: str | None = None
        started = time.monotonic()
        session = self._session
        if session is None:
            await self._finish(target, item, AttemptOutcome("released"))
            return
        try:
            async with session.post(
                target.cfg.url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=target.cfg.timeout),
            ) as resp:
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
                snippet = await resp.content.read(512)
                if not 200 <= status < 300:
                    text = snippet.decode("utf-8", "replace").strip()
                    error = f"HTTP {status}" + (f": {text[:200]}" if text else "")
                    if 300 <= status < 400:
                        error += f" (redirect to {resp.headers.get('Location', '?')} not followed)"
        except TimeoutError:
            error = f"timeout after {target.cfg.timeout:g}s"
        except aiohttp.ClientError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        except OSError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        latency = time.monotonic() - started
        was_open = target.breaker.opened_at is not None
        result = self._classify(target, item, status, retry_after, error, latency)
        await self._finish(target, item, result)
        is_open = target.breaker.opened_at is not None
        if is_open != was_open:
            await self._breaker_gauge(target, is_open)
        fields = {
            "event_id": item.event_id,
            "target": target.id,
            "attempt": item.attempts + 1,
            "status": status if status is not None else "-",
            "latency_ms": round(latency * 1000, 1),
            "outcome": result.outcome,
        }
        if result.outcome == "delivered":
            log.info("webhook delivered", extra=log_fields(item.msg_id, item.trace_id, **fields))
        else:
            if result.next_attempt_at is not None:
                fields["retry_in_s"] = round(result.next_attempt_at - time.time(), 1)
            fields["error"] = error or ""
            level = logging.WARNING if result.outcome in ("dead", "disabled") else logging.INFO
            log.log(
                level,
                "webhook not delivered",
                extra=log_fields(item.msg_id, item.trace_id, **fields),
            )

    def _classify(
        self,
        target: _Target,
        item: OutboxItem,
        status: int | None,
        retry_after: str | None,
        error: str | None,
        latency: float,
    ) -> AttemptOutcome:
        made = item.attempts + 1
        now = time.time()
        if status is not None and 200 <= status < 300:
            target.breaker.success()
            return AttemptOutcome("delivered", status=status, latency=latency)
        if status == 410:
            target.breaker.success()
            self._disabled[target.id] = error or "410 Gone"
            log.warning(
                "webhook target answered 410 Gone: disabled until re-enabled"
                " (mailgate dlq enable-target)",
                extra=log_fields(target=target.id, error=error or "HTTP 410 Gone"),
            )
            return AttemptOutcome("disabled", status=status, latency=latency, error=error)
        retryable = status is None or status in RETRYABLE_STATUS or status >= 500
        if retryable:
            if target.breaker.failure():
                log.warning(
                    "circuit breaker open",
                    extra=log_fields(
                        target=target.id,
                        cooldown_s=target.breaker.cooldown,
                        error=error or f"HTTP {status}",
                    ),
                )
            delay = self.schedule.delay_after(made)
            if delay is None:
                return AttemptOutcome("dead", status=status, latency=latency, error=error)
            wait = parse_retry_after(retry_after, now=now)
            if wait is not None:
                delay = wait  # the receiver said when it can take it (RFC 9110 §10.2.3)
            return AttemptOutcome(
                "retry", status=status, latency=latency, error=error, next_attempt_at=now + delay
            )
        # 3xx and 4xx other than 408/410/429: the request itself is wrong for this receiver
        target.breaker.success()
        delay = self.schedule.delay_after(made)
        if delay is None or item.client_errors >= self.cfg.client_error_retries:
            return AttemptOutcome("dead", status=status, latency=latency, error=error)
        return AttemptOutcome(
            "retry",
            status=status,
            latency=latency,
            error=error,
            next_attempt_at=now + delay,
            counts_as_client_error=True,
        )

    async def _breaker_gauge(self, target: _Target, is_open: bool) -> None:
        """Store the breaker state for ``/metrics`` (served by another process)."""
        try:
            await self.store.set_delivery_metric(
                "webhook_breaker_open", {"target": target.id}, 1.0 if is_open else 0.0
            )
        except StoreError as exc:
            self._limited.log(
                logging.WARNING,
                "breaker-state",
                "could not record the breaker state",
                exc=exc,
                target=target.id,
            )

    async def _finish(self, target: _Target, item: OutboxItem, result: AttemptOutcome) -> None:
        try:
            await self.store.finish_attempt(item, result, owner=self.owner)
        except StoreError as exc:
            # the lease expires and the row is attempted again: at least once, same webhook-id
            self._limited.log(
                logging.WARNING,
                "finish-attempt",
                "could not record a delivery attempt",
                exc=exc,
                msg_id=item.msg_id,
                trace_id=item.trace_id,
                event_id=item.event_id,
                target=target.id,
            )
