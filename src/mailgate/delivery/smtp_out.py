"""The SMTP outbox worker: claim queued replies, DKIM-sign, send through the smarthost, record.

Acknowledgements leave only through the configured smarthost (``[reply] smarthost``, with
``smarthost_tls`` = ``none`` | ``starttls`` | ``tls`` and an optional login), never by direct
MX delivery. One connection carries a batch of due replies. Each reply is sent with the
envelope sender it was queued with (by default the null sender ``MAIL FROM:<>``, RFC 3834
section 3.3, so a failed acknowledgement cannot bounce back into a loop) to exactly one
recipient: the return path of the acknowledged message.

Outcomes of an attempt:

- ``250`` after DATA: ``sent``;
- a 5xx answer to MAIL, RCPT or DATA: permanent, the reply goes to the DLQ (``dead``);
- an SMTPUTF8 reply (a non-ASCII return path or From) and a smarthost that does not advertise
  SMTPUTF8: ``skipped``, the row is kept ``suppressed`` with reason ``smtputf8-unsupported``;
- a 4xx answer, a refused/lost connection, a timeout, a TLS or login failure (a smarthost or
  config problem, not the reply's): retried on ``[reply] retry_schedule``, and to the DLQ once
  the schedule is spent. Nothing is lost while the smarthost is down.

Every attempt is recorded (``mailgate outbox show``). Sending is at least once: a crash between
the smarthost's 250 and the record sends the reply again (same Message-ID).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from typing import Any

import aiosmtplib
from prometheus_client import Counter

from mailgate.backoff import LoopBackoff
from mailgate.config import ReplyConfig, parse_hostport
from mailgate.logs import describe_error, log_fields
from mailgate.metrics import REGISTRY
from mailgate.reply.compose import ReplyDraft, parse_from
from mailgate.reply.signing import DkimSigner, SigningError, load_signer
from mailgate.retry import RetrySchedule
from mailgate.store.base import StoreError
from mailgate.store.notify import REPLIES
from mailgate.store.ports import lease_owner, node_name
from mailgate.store.replies import ReplyAttempt, ReplyItem, ReplyStore

log = logging.getLogger("mailgate.reply")

REPLIES_SENT = Counter(
    "mailgate_reply_attempts",
    "Auto-reply send attempts by outcome (sent, retry, dead, skipped)",
    ["outcome"],
    registry=REGISTRY,
)

BATCH = 20
POLL_INTERVAL = 1.0
LEASE_MARGIN = 30.0


class _Transient(Exception):
    """The smarthost cannot take mail now (connection, TLS, login): every reply waits."""

    def __init__(self, error: str, code: int | None = None) -> None:
        super().__init__(error)
        self.code = code


def _text(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {message}"[:500]


class ReplySender:
    """Sends the reply outbox; ``start()`` spawns its task, ``stop()`` ends it."""

    def __init__(
        self,
        store: ReplyStore,
        cfg: ReplyConfig,
        *,
        batch: int = BATCH,
        poll_interval: float = POLL_INTERVAL,
        node: str | None = None,
    ) -> None:
        self.store = store
        self.cfg = cfg
        self.batch = max(1, batch)
        self.poll_interval = poll_interval
        self.schedule = RetrySchedule.parse(cfg.retry_schedule)
        self.host, self.port = parse_hostport(cfg.smarthost)
        self.signer: DkimSigner | None = load_signer(
            cfg.dkim_domain, cfg.dkim_selector, cfg.dkim_key_file
        )
        self.helo = cfg.helo_name or parse_from(cfg.from_)[1].rpartition("@")[2] or "localhost"
        # ``[store] node``: two nodes on one host hold distinct leases
        self.owner = lease_owner(node_name(store, node))
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._waker: Any = None
        self._stopping = False
        self._backoff = LoopBackoff(log, "reply sender", expected=(StoreError,))

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        self._wake = wake

        def waker() -> None:
            loop.call_soon_threadsafe(wake.set)

        self._waker = waker
        self.store.notifier.subscribe(REPLIES, waker)
        self._stopping = False
        self._task = asyncio.create_task(self._dispatch(), name="mailgate-reply-sender")
        log.info(
            "reply sender started",
            extra={
                "fields": {
                    "smarthost": self.cfg.smarthost,
                    "tls": self.cfg.smarthost_tls,
                    "dkim": bool(self.signer),
                    "attempts": self.schedule.attempts,
                }
            },
        )

    async def stop(self) -> None:
        self._stopping = True
        if self._waker is not None:
            self.store.notifier.unsubscribe(REPLIES, self._waker)
            self._waker = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await asyncio.wait_for(self.store.release_reply_leases(self.owner), 2.0)
        except (StoreError, TimeoutError) as exc:
            log.warning(
                "could not release reply leases; they expire on their own",
                extra=log_fields(error=describe_error(exc)),
            )

    def wake(self) -> None:
        """Look for due replies now."""
        if self._wake is not None:
            self._wake.set()

    notify = wake
    """Called by the runtime right after a message was processed."""

    async def _dispatch(self) -> None:
        assert self._wake is not None
        while not self._stopping:
            self._wake.clear()
            try:
                sent = await self.run_once()
                self._backoff.succeeded()
                if sent:
                    continue
                delay = self.poll_interval
                due = await self.store.next_reply_due_at()
                if due is not None:
                    delay = min(delay, max(0.005, due - time.time()))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the worker must outlive any one bad round
                # a failing store (disk full) or a bug: wait longer each time, log sparingly
                delay = self._backoff.failed(exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    # ------------------------------------------------------------------ one batch

    async def run_once(self) -> int:
        """Claim due replies and attempt each once; returns how many were attempted."""
        # One sender runs per store (the first worker) and works its batch in order, so the
        # lease only decides how soon rows of a crashed sender are taken up again.
        lease = self.cfg.timeout * 3 + LEASE_MARGIN
        items = await self.store.claim_replies(self.batch, owner=self.owner, lease=lease)
        if not items:
            return 0
        client: aiosmtplib.SMTP | None = None
        try:
            for index, item in enumerate(items):
                try:
                    if client is None or not client.is_connected:
                        client = await self._connect()
                    result = await self._send(client, item)
                except _Transient as exc:
                    # the smarthost is unusable: this and the rest of the batch wait
                    for rest in items[index:]:
                        await self._finish(rest, self._retry(rest, exc.code, str(exc)))
                    break
                await self._finish(item, result)
        finally:
            if client is not None and client.is_connected:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.quit(), self.cfg.timeout)
        return len(items)

    def _tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.cfg.smarthost_ca_file or None)

    async def _connect(self) -> aiosmtplib.SMTP:
        mode = self.cfg.smarthost_tls
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            local_hostname=self.helo,
            timeout=self.cfg.timeout,
            use_tls=mode == "tls",
            start_tls=mode == "starttls",
            tls_context=self._tls_context() if mode != "none" else None,
        )
        try:
            await client.connect()
            if self.cfg.smarthost_username:
                await client.login(self.cfg.smarthost_username, self.cfg.smarthost_password)
        except aiosmtplib.SMTPResponseException as exc:
            with contextlib.suppress(Exception):
                client.close()
            raise _Transient(f"smarthost {self.cfg.smarthost}: {_text(exc)}", exc.code) from None
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError, TimeoutError) as exc:
            with contextlib.suppress(Exception):
                client.close()
            raise _Transient(f"smarthost {self.cfg.smarthost}: {_text(exc)}") from None
        return client

    async def _send(self, client: aiosmtplib.SMTP, item: ReplyItem) -> ReplyAttempt:
        try:
            message = ReplyDraft.from_json(item.draft).build()
        except (ValueError, TypeError, KeyError) as exc:
            return ReplyAttempt("dead", None, f"unusable draft: {_text(exc)}")
        try:
            if self.signer is not None:
                message = self.signer.sign(message)
        except SigningError as exc:
            # a key problem is the operator's to fix; keep the reply until it is fixed
            return self._retry(item, None, str(exc))
        options = ["SMTPUTF8"] if item.smtputf8 else []
        if item.smtputf8 and not await self._supports_smtputf8(client):
            # RFC 6531 section 3.4: without the extension the smarthost cannot carry a
            # non-ASCII address; downgrading it is not ours to invent. Skipped, with reason.
            return ReplyAttempt(
                "skipped",
                None,
                "smarthost does not advertise SMTPUTF8; the return path needs it",
                reason="smtputf8-unsupported",
            )
        try:
            errors, _response = await client.sendmail(
                item.mail_from, [item.recipient], message, mail_options=options
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0] if exc.recipients else None
            code = refused.code if refused is not None else None
            await _quiet_rset(client)
            return self._answered(item, code, _text(refused or exc))
        except aiosmtplib.SMTPResponseException as exc:
            await _quiet_rset(client)
            return self._answered(item, exc.code, _text(exc))
        except aiosmtplib.SMTPNotSupported as exc:
            return ReplyAttempt("dead", None, _text(exc))
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise _Transient(f"smarthost {self.cfg.smarthost}: {_text(exc)}") from None
        except Exception as exc:  # a bug or an odd value: keep the reply, say why
            log.exception("reply send failed unexpectedly", extra=log_fields(item.msg_id))
            return self._retry(item, None, f"unexpected: {_text(exc)}")
        if errors:
            code, text = next(iter(errors.values()))
            return self._answered(item, code, f"refused: {text}")
        return ReplyAttempt("sent", 250, None)

    async def _supports_smtputf8(self, client: aiosmtplib.SMTP) -> bool:
        """Whether the smarthost's EHLO answer lists SMTPUTF8 (EHLO is sent first if needed)."""
        if client.is_ehlo_or_helo_needed:
            try:
                await client.ehlo()
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                raise _Transient(f"smarthost {self.cfg.smarthost}: {_text(exc)}") from None
        return client.supports_extension("smtputf8")

    def _answered(self, item: ReplyItem, code: int | None, error: str) -> ReplyAttempt:
        """A reply code from the smarthost: 5xx is permanent (DLQ), anything else is retried."""
        if code is not None and 500 <= code < 600:
            return ReplyAttempt("dead", code, error)
        return self._retry(item, code, error)

    def _retry(self, item: ReplyItem, code: int | None, error: str) -> ReplyAttempt:
        delay = self.schedule.delay_after(item.attempts + 1)
        if delay is None:
            return ReplyAttempt("dead", code, f"retries spent; last: {error}")
        return ReplyAttempt("retry", code, error, time.time() + delay)

    async def _finish(self, item: ReplyItem, result: ReplyAttempt) -> None:
        await self.store.finish_reply(item, result, owner=self.owner)
        REPLIES_SENT.labels(outcome=result.outcome).inc()
        fields: dict[str, Any] = {
            "reply": item.id,
            "outcome": result.outcome,
            "attempt": item.attempts + 1,
        }
        if result.code is not None:
            fields["code"] = result.code
        if result.error:
            fields["error"] = result.error
        level = logging.INFO if result.outcome == "sent" else logging.WARNING
        event = "reply sent" if result.outcome == "sent" else "reply not sent"
        log.log(level, event, extra=log_fields(item.msg_id, **fields))


async def _quiet_rset(client: aiosmtplib.SMTP) -> None:
    """Leave the connection clean for the next reply of the batch (RFC 5321 4.1.1.5)."""
    if client.is_connected:
        with contextlib.suppress(Exception):
            await client.rset()
