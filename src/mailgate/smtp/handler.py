"""The listener's decisions: policy at MAIL/RCPT, authentication and the durable spool at DATA.

Thin on purpose (aiosmtpd ``handlers.py``, Mailman ``runners/lmtp.py``): no MIME parsing, no
SQL and no protocol here (``session.py`` reads the wire and calls these). The 250 after DATA
is sent only once ``Spool.spool`` has returned, i.e. after the COMMIT holding the bytes; any
store failure answers 451 4.3.0.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from mailgate import metrics
from mailgate.config import SmtpConfig
from mailgate.envelope import AuthResult, new_id
from mailgate.logs import current_log_context, get_logger, log_fields
from mailgate.metrics import record_auth_action
from mailgate.smtp import replies
from mailgate.smtp.policy import (
    IpRateLimiter,
    RecipientPolicy,
    Refused,
    split_address,
)
from mailgate.smtp.state import Envelope, Session, peer_ip
from mailgate.store.base import Spool, SpoolRecord

log = get_logger("smtp")


class AuthReportLike(Protocol):
    action: str
    reason: str

    def to_json(self) -> dict[str, Any]: ...


class SenderAuth(Protocol):
    """What the handler needs of ``auth.checker.AuthChecker``."""

    async def check_spf(self, client_ip: str, helo: str, mail_from: str) -> AuthResult: ...

    async def check_message(
        self, raw: bytes, *, client_ip: str, helo: str, mail_from: str, spf: AuthResult | None
    ) -> AuthReportLike: ...


class ContentCheck(Protocol):
    async def __call__(
        self, raw: bytes, *, ip: str, helo: str, mail_from: str, rcpt_to: list[str]
    ) -> str | None: ...


class SmtpHandler:
    def __init__(
        self,
        cfg: SmtpConfig,
        *,
        policy: RecipientPolicy,
        spool: Spool,
        auth: SenderAuth | None = None,
        auth_inline: bool = True,
        limiter: IpRateLimiter | None = None,
        content_check: ContentCheck | None = None,
    ) -> None:
        self.cfg = cfg
        # [spam]/[antivirus] check_at = "data": a reply refusing the message, or None (gate.py)
        self.content_check = content_check
        self.policy = policy
        self.spool = spool
        self.auth = auth
        # False: only SPF runs here; DKIM/ARC/DMARC run in the worker after the 250 (nothing
        # in the SMTP reply depends on them unless a policy rejects or defers on auth).
        self.auth_inline = auth_inline
        self.limiter = limiter or IpRateLimiter(cfg.max_messages_per_ip_per_minute)

    # called by session.py ----------------------------------------------------------

    def accept_proxy(self, session: Session, proxy_data: Any) -> bool:
        """A PROXY header was read: serve the session if it parsed."""
        return bool(proxy_data)

    def mail(self, session: Session, envelope: Envelope, address: str, options: list[str]) -> str:
        """MAIL FROM after its syntax checks: the sender's syntax and rate; SPF starts here."""
        ip = peer_ip(session)
        # The null reverse-path (bounces, RFC 5321 4.5.5) arrives as "<>" and stays so on the
        # envelope (it is "in a transaction"); "" is stored.
        sender = "" if address == "<>" else address
        if sender and ("@" not in sender or sender.startswith("@") or sender.endswith("@")):
            metrics.SMTP_REJECTED.labels(reason="sender-syntax").inc()
            return replies.SYNTAX_SENDER
        if not self.limiter.allow(ip):
            metrics.SMTP_REJECTED.labels(reason="rate-limited").inc()
            log.info("rate limited", extra=log_fields(fields={"client_ip": ip}))
            return replies.RATE_LIMITED
        if self.auth is not None:
            task = asyncio.ensure_future(self.auth.check_spf(ip, session.host_name or "", sender))
            task.add_done_callback(_retrieve)
            envelope.spf_task = task
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return replies.SENDER_OK

    def rcpt(self, session: Session, envelope: Envelope, address: str, options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= self.cfg.max_recipients:
            metrics.SMTP_REJECTED.labels(reason="too-many-recipients").inc()
            return replies.TOO_MANY_RECIPIENTS
        verdict = self.policy.check(address)
        if isinstance(verdict, Refused):
            metrics.SMTP_REJECTED.labels(reason=verdict.reason).inc()
            # The domain says whom the attempt was for; the local part is the sender's guess
            # at a mailbox and stays out of the log.
            parts = split_address(address)
            log.info(
                "recipient refused",
                extra=log_fields(
                    fields={
                        "reason": verdict.reason,
                        "rcpt_domain": parts[1] if parts else "",
                        "client_ip": peer_ip(session),
                    }
                ),
            )
            if verdict.reason == "unknown-mailbox":
                return replies.UNKNOWN_MAILBOX
            if verdict.reason == "syntax":
                return replies.SYNTAX_RECIPIENT
            return replies.RELAY_DENIED
        if address in envelope.rcpt_tos:
            return replies.RECIPIENT_OK  # duplicate RCPT: harmless, keep one
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        envelope.accepted[address] = verdict
        return replies.RECIPIENT_OK

    async def data(self, session: Session, envelope: Envelope) -> str:
        """The message has been read: check it, spool it; the reply is sent after COMMIT."""
        raw = envelope.content or b""
        if len(raw) > self.cfg.max_message_size:
            metrics.SMTP_REJECTED.labels(reason="too-big").inc()
            return replies.TOO_BIG
        ip = peer_ip(session)
        helo = session.host_name or ""
        mail_from = envelope.mail_from or ""
        if mail_from == "<>":
            mail_from = ""
        tls = session.ssl is not None
        trace_id = current_log_context()[1] or new_id("trc")[4:]  # the session's trace
        auth_json: dict[str, Any] | None = None
        if self.auth is not None:
            started = time.perf_counter()
            spf: AuthResult | None = None
            if envelope.spf_task is not None:
                try:
                    spf = await envelope.spf_task
                except Exception:
                    log.exception("spf check failed", extra=log_fields(trace_id=trace_id))
                    spf = None
            if not self.auth_inline:
                auth_json = {"spf": spf.to_json() if spf is not None else None, "deferred": True}
            else:
                auth_json = await self._check_inline(
                    raw, ip, helo, mail_from, spf, trace_id, started
                )
                action = auth_json.get("authAction", {}).get("action")
                if action == "reject":
                    metrics.SMTP_REJECTED.labels(reason="auth-reject").inc()
                    reason = str(auth_json["authAction"].get("reason", ""))
                    log.info(
                        "rejected by auth policy",
                        extra=log_fields(trace_id=trace_id, fields={"reason": reason}),
                    )
                    return replies.SPF_REJECT if reason.startswith("spf") else replies.DMARC_REJECT
                if action == "defer":
                    metrics.SMTP_REJECTED.labels(reason="auth-tempfail").inc()
                    return replies.AUTH_TEMPFAIL
        if self.content_check is not None:
            refused = await self.content_check(
                raw, ip=ip, helo=helo, mail_from=mail_from, rcpt_to=list(envelope.rcpt_tos)
            )
            if refused is not None:
                return refused
        # One stored message per tenant: one tenant's data never reaches another's targets.
        by_tenant: dict[str, list[str]] = {}
        for rcpt in envelope.rcpt_tos:
            acc = envelope.accepted.get(rcpt)
            tenant = acc.tenant if acc is not None else "default"
            by_tenant.setdefault(tenant, []).append(rcpt)
        received_at = time.time()
        records = [
            SpoolRecord(
                id=new_id("msg"),
                received_at=received_at,
                mail_from=mail_from,
                rcpt_to=rcpts,
                client_ip=ip,
                helo=helo,
                tls=tls,
                raw=raw,
                tenant=tenant,
                trace_id=trace_id,
                auth=auth_json,
                smtp={"esmtp": list(envelope.mail_options), "smtputf8": envelope.smtp_utf8},
            )
            for tenant, rcpts in by_tenant.items()
        ]
        try:
            await self.spool.spool(*records)
        except Exception as exc:
            metrics.SMTP_REJECTED.labels(reason="store-failed").inc()
            log.error(
                "spool failed",
                extra=log_fields(trace_id=trace_id, fields={"error": str(exc)[:200]}),
            )
            return replies.STORE_FAILED
        metrics.SMTP_ACCEPTED.inc(len(records))
        for r in records:
            log.info(
                "accepted",
                extra=log_fields(
                    r.id,
                    trace_id,
                    size=len(raw),
                    client_ip=ip,
                    rcpts=len(r.rcpt_to),
                    tenant=r.tenant,
                ),
            )
        return replies.queued(records[0].id)

    async def _check_inline(
        self,
        raw: bytes,
        ip: str,
        helo: str,
        mail_from: str,
        spf: AuthResult | None,
        trace_id: str,
        started: float,
    ) -> dict[str, Any]:
        assert self.auth is not None
        try:
            report = await self.auth.check_message(
                raw, client_ip=ip, helo=helo, mail_from=mail_from, spf=spf
            )
        except Exception:
            # Never lose mail over a checker bug: accept, record why, let the pipeline see it.
            log.exception("auth check failed", extra=log_fields(trace_id=trace_id))
            return {"authAction": {"action": "accept", "reason": "auth error", "would": None}}
        metrics.AUTH_SECONDS.observe(time.perf_counter() - started)
        record_auth_action(report.to_json())
        return report.to_json()

    def reset(self, envelope: Envelope) -> None:
        """The transaction ends (RSET, HELO/EHLO, after DATA, the client gone): stop its SPF."""
        if envelope.spf_task is not None:
            envelope.spf_task.cancel()
            envelope.spf_task = None


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Collect a cancelled or failed SPF task's outcome (DATA reports failures it awaits)."""
    if not task.cancelled():
        task.exception()
