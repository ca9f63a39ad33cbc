"""The sender-authentication facade the SMTP handler calls, and the enforcement decision.

Owns: the :class:`AuthChecker` lifecycle (one :class:`~mailgate.auth.dns.Resolver`, one worker
thread pool), running SPF at MAIL FROM and DKIM + ARC + DMARC at the end of DATA inside the
configured budget, the enforcement decision (``auth.dmarc_enforce``, ``auth.spf_fail``,
``auth.temperror``, shadow mode) and the Authentication-Results value.

Concurrency design. pyspf and dkimpy are synchronous; their DNS always goes through the one
async resolver and its cache (:class:`~mailgate.auth.dns.SyncBridge`). Where they run:

- *Warm cache, message up to 64 KiB* (the steady state): inline on the event loop with a
  cache-only bridge. No thread hop, no GIL hand-off; about 0.5-0.8 ms of CPU per message, mostly
  dkimpy's canonicalization. A lookup that is not cached aborts the inline attempt
  (``CacheMiss``) and the job re-runs in the pool below.
- *Cold cache or larger message*: a small thread pool. A worker's cache hits are answered in
  the thread; misses run on the event loop (``run_coroutine_threadsafe``) and the thread waits
  for them within the budget, so the loop never blocks on DNS.
- *Optional* ``auth.verify_processes = N``: DKIM/ARC verification in N worker processes
  (``pool.py``): the key records are resolved here first, the worker verifies from them without
  any network access, on another core. Useful on many-core hosts and for large signed mail;
  on small hosts the IPC costs about what it saves.

DMARC (a couple of TXT lookups and arithmetic) runs on the event loop directly; on a cold cache
its record lookup starts while the signatures verify.

Budget. Every call is wrapped in ``asyncio.timeout(cfg.budget)``; the worker's
:class:`~mailgate.auth.dns.Deadline` is the same instant, and on expiry the deadline is cancelled
so the abandoned thread's next lookup fails immediately. Anything unfinished becomes
``temperror`` with the reason, and ``auth.temperror`` decides accept/quarantine/defer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from mailgate.auth.arc import verify_arc_sync
from mailgate.auth.dkim import verify_dkim_sync
from mailgate.auth.dmarc import arc_override, author_domains, check_dmarc
from mailgate.auth.dns import CacheMiss, Deadline, Resolver, SyncBridge
from mailgate.auth.pool import PoolUnavailable, VerifyPool
from mailgate.auth.results import build_authentication_results, filter_headers
from mailgate.auth.spf import check_spf_sync
from mailgate.config import AuthConfig
from mailgate.envelope import AuthResult
from mailgate.logs import describe_error, log_fields

__all__ = ["AuthChecker", "AuthReport", "decide", "filter_headers"]

log = logging.getLogger("mailgate.auth")

T = TypeVar("T")

WORKERS = 8
# Jobs on messages up to this size may run inline on the event loop when all their DNS is
# cached (about 0.5 ms for a 4 KB message, a few ms at this bound); larger ones always use the
# pool so a 25 MB body never holds the loop while it is canonicalized and hashed.
INLINE_MAX_BYTES = 64 * 1024
_RANK = {"accept": 0, "quarantine": 1, "defer": 2, "reject": 3}


@dataclass(frozen=True)
class AuthReport:
    """All verdicts for one message plus what to do with it (see module docstring)."""

    spf: AuthResult
    dkim: AuthResult
    dmarc: AuthResult
    arc: AuthResult
    authentication_results: str
    action: str  # "accept" | "quarantine" | "reject" | "defer"
    reason: str
    would: str | None = None  # shadow mode: the action enforcement would have taken

    def to_json(self) -> dict[str, Any]:
        return {
            "spf": self.spf.to_json(),
            "dkim": self.dkim.to_json(),
            "dmarc": self.dmarc.to_json(),
            "arc": self.arc.to_json(),
            "authenticationResults": self.authentication_results,
            "authAction": {"action": self.action, "reason": self.reason, "would": self.would},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AuthReport:
        action = data.get("authAction") or {}
        none = {"result": "none"}
        return cls(
            spf=AuthResult.from_json(data.get("spf") or none),
            dkim=AuthResult.from_json(data.get("dkim") or none),
            dmarc=AuthResult.from_json(data.get("dmarc") or none),
            arc=AuthResult.from_json(data.get("arc") or none),
            authentication_results=str(data.get("authenticationResults", "")),
            action=str(action.get("action", "accept")),
            reason=str(action.get("reason", "")),
            would=action.get("would"),
        )


_FROM_FIELD = re.compile(rb"^from[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


_SIGNED = re.compile(
    rb"^(?:dkim-signature|arc-seal|arc-message-signature)[ \t]*:", re.IGNORECASE | re.MULTILINE
)


def _header_end(raw: bytes) -> int:
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        end = raw.find(b"\n\n")
    return len(raw) if end < 0 else end


def _from_values(raw: bytes) -> list[str]:
    """The unfolded From header values, from the header section only (RFC 5322 2.2.3)."""
    head = raw[: _header_end(raw)]
    return [
        re.sub(rb"\r?\n(?=[ \t])", b"", m.group(1)).strip().decode("utf-8", "replace")
        for m in _FROM_FIELD.finditer(head)
    ]


def decide(cfg: AuthConfig, spf: AuthResult, dmarc: AuthResult) -> tuple[str, str]:
    """(action, reason) under the configured enforcement, ignoring shadow mode.

    - DMARC ``fail``: the disposition (published policy after ``pct``) is enforced up to
      ``dmarc_enforce``; mailgate never goes beyond what the domain published.
    - SPF ``fail`` acts only if ``spf_fail`` says so (RFC 7208 section 8.4 leaves it local).
    - A ``temperror`` that leaves the DMARC (or an enforced SPF) verdict unknown follows
      ``auth.temperror``.
    """
    default = f"dmarc={dmarc.result}"
    candidates: list[tuple[str, str]] = [("accept", default)]
    if dmarc.result == "fail":
        disposition = str(dmarc.extra.get("disposition", "none"))
        why = f"dmarc=fail p={dmarc.extra.get('policy', 'none')}"
        if disposition != dmarc.extra.get("policy"):
            why += f" dis={disposition}"
        if dmarc.extra.get("override"):
            why += f" overridden={dmarc.extra['override']}"
        if disposition == "reject":
            if cfg.dmarc_enforce == "reject":
                candidates.append(("reject", why))
            elif cfg.dmarc_enforce == "quarantine":
                candidates.append(("quarantine", why))
        elif disposition == "quarantine" and cfg.dmarc_enforce in ("reject", "quarantine"):
            candidates.append(("quarantine", why))
        candidates.append(("accept", why))
    elif dmarc.result == "temperror":
        candidates.append((_temperror_action(cfg), f"dmarc=temperror ({dmarc.reason})"))
    if spf.result == "fail" and cfg.spf_fail != "tag":
        candidates.append(
            ("reject" if cfg.spf_fail == "reject" else "quarantine", f"spf=fail ({spf.domain})")
        )
    elif spf.result == "temperror" and cfg.spf_fail != "tag":
        candidates.append((_temperror_action(cfg), f"spf=temperror ({spf.reason})"))
    action, reason = max(candidates, key=lambda c: (_RANK[c[0]], c[1] != default))
    return action, reason


def _temperror_action(cfg: AuthConfig) -> str:
    return {"accept": "accept", "quarantine": "quarantine", "defer": "defer"}[cfg.temperror]


def _temperror(reason: str) -> AuthResult:
    return AuthResult("temperror", None, reason)


class AuthChecker:
    """SPF/DKIM/ARC/DMARC for the SMTP handler. One per process; ``close()`` at shutdown."""

    def __init__(
        self, cfg: AuthConfig, authserv_id: str, *, rng: random.Random | None = None
    ) -> None:
        self.cfg = cfg
        self.authserv_id = authserv_id.lower()
        self.resolver = Resolver(cfg.nameservers, timeout=cfg.timeout, cache_size=cfg.cache_size)
        self.rng = rng or random.Random()
        self._pool: ThreadPoolExecutor | None = None
        self._verify_pool = VerifyPool(cfg.verify_processes) if cfg.verify_processes > 0 else None

    # ------------------------------------------------------------------ plumbing

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="mailgate-auth")
        return self._pool

    def _try_inline(
        self, deadline: Deadline, fn: Callable[[SyncBridge], T], size: int
    ) -> tuple[bool, T | None]:
        """Run a small job on the loop thread with cache-only DNS: (done, result)."""
        if size > INLINE_MAX_BYTES:
            return False, None
        bridge = self.resolver.bridge(deadline, cache_only=True)
        try:
            result = fn(bridge)
        except CacheMiss:
            return False, None
        if bridge.missed:  # a library swallowed the miss: the result may lack data
            return False, None
        return True, result

    async def _run_sync(
        self, deadline: Deadline, fn: Callable[[SyncBridge], T], *, size: int = 0
    ) -> T:
        """Run a pyspf/dkimpy job: inline when it is small and its DNS is all cached, else in
        the worker pool (see module docstring)."""
        done, result = self._try_inline(deadline, fn, size)
        if done:
            return result  # type: ignore[return-value]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor(), fn, self.resolver.bridge(deadline))

    def _pool_for(self, raw: bytes) -> VerifyPool | None:
        """The verification pool, when configured and the message carries signatures."""
        if self._verify_pool is None or not _SIGNED.search(raw[: _header_end(raw)]):
            return None
        return self._verify_pool

    async def _verify_pooled(
        self,
        pool: VerifyPool,
        raw: bytes,
        from_domain: str | None,
        deadline: Deadline,
        fallback: Callable[[SyncBridge], tuple[AuthResult, AuthResult]],
    ) -> tuple[AuthResult, AuthResult]:
        try:
            return await pool.verify(raw, from_domain, self.resolver)
        except PoolUnavailable as exc:
            if self._verify_pool is pool:  # once: verify in this process from now on
                log.warning(
                    "auth verification processes unavailable, verifying in process",
                    extra=log_fields(error=describe_error(exc)[:200]),
                )
                self._verify_pool = None
                pool.close()
            return await self._run_sync(deadline, fallback, size=len(raw))

    def _budget_reason(self) -> str:
        return f"auth budget of {self.cfg.budget:g}s exhausted"

    # ------------------------------------------------------------------ SPF

    async def check_spf(self, client_ip: str, helo: str, mail_from: str) -> AuthResult:
        """SPF at MAIL FROM (the HELO identity for the null sender). Never raises."""
        if not self.cfg.enabled:
            return AuthResult("none", None, "auth disabled")
        if self._verify_pool is not None:
            self._verify_pool.warm()  # DATA follows: have the workers ready by then
        deadline = Deadline(self.cfg.budget)
        try:
            async with asyncio.timeout(self.cfg.budget):
                return await self._spf(deadline, client_ip, helo, mail_from)
        except TimeoutError:
            deadline.cancelled.set()
            return _temperror(self._budget_reason())

    async def _spf(
        self, deadline: Deadline, client_ip: str, helo: str, mail_from: str
    ) -> AuthResult:
        return await self._run_sync(
            deadline, lambda bridge: check_spf_sync(bridge, client_ip, helo, mail_from)
        )

    # ------------------------------------------------------------------ whole message

    async def check_message(
        self,
        raw: bytes,
        *,
        client_ip: str,
        helo: str,
        mail_from: str,
        spf: AuthResult | None,
        msg_id: str | None = None,
    ) -> AuthReport:
        """All checks for a received message, within ``cfg.budget``. Never raises."""
        started = time.perf_counter()
        if not self.cfg.enabled:
            off = AuthResult("none", None, "auth disabled")
            return AuthReport(
                spf=off,
                dkim=off,
                dmarc=off,
                arc=off,
                authentication_results=f"{self.authserv_id}; none",
                action="accept",
                reason="auth disabled",
            )
        deadline = Deadline(self.cfg.budget)
        from_values = _from_values(raw)
        domains, _ = author_domains(from_values)
        from_domain = domains[0] if domains else None

        spf_task: asyncio.Task[AuthResult] | None = None
        sigs_task: asyncio.Future[tuple[AuthResult, AuthResult]] | None = None
        prefetch: list[asyncio.Task[Any]] = []
        spf_result = spf
        dkim_result = arc_result = dmarc_result = None
        try:
            async with asyncio.timeout(self.cfg.budget):

                def sigs_job(bridge: SyncBridge) -> tuple[AuthResult, AuthResult]:
                    return verify_dkim_sync(raw, bridge, from_domain), verify_arc_sync(raw, bridge)

                pooled = self._pool_for(raw)
                if pooled is not None:
                    sigs_task = asyncio.ensure_future(
                        self._verify_pooled(pooled, raw, from_domain, deadline, sigs_job)
                    )
                else:
                    # Warm cache, no pool: everything runs inline, no task, no thread.
                    done, sigs = self._try_inline(deadline, sigs_job, len(raw))
                    if done and sigs is not None:
                        dkim_result, arc_result = sigs
                if spf_result is None:
                    spf_task = asyncio.ensure_future(
                        self._spf(deadline, client_ip, helo, mail_from)
                    )
                if dkim_result is None:
                    # Warm the DMARC record lookups while the signatures verify.
                    prefetch = [
                        asyncio.ensure_future(self._prefetch_dmarc(d))
                        for d in domains[:3]
                        if self.resolver.cached(f"_dmarc.{d}", "TXT") is None
                    ]
                if dkim_result is None and sigs_task is None:
                    loop = asyncio.get_running_loop()
                    sigs_task = asyncio.ensure_future(
                        loop.run_in_executor(
                            self._executor(), sigs_job, self.resolver.bridge(deadline)
                        )
                    )
                if spf_task is not None:
                    spf_result = await spf_task
                if sigs_task is not None:
                    dkim_result, arc_result = await sigs_task
                assert spf_result is not None and dkim_result is not None
                dmarc_result = await check_dmarc(
                    self.resolver, from_values, spf_result, dkim_result, self.rng, domains=domains
                )
                assert arc_result is not None
                dmarc_result = arc_override(dmarc_result, arc_result, self.cfg.arc_trusted_sealers)
        except TimeoutError:
            deadline.cancelled.set()
            why = self._budget_reason()
            if spf_result is None and spf_task is not None and spf_task.done():
                with contextlib.suppress(BaseException):
                    spf_result = spf_task.result()
            if dkim_result is None and sigs_task is not None and sigs_task.done():
                with contextlib.suppress(BaseException):
                    dkim_result, arc_result = sigs_task.result()
            spf_result = spf_result or _temperror(why)
            dkim_result = dkim_result or _temperror(why)
            arc_result = arc_result or _temperror(why)
            dmarc_result = dmarc_result or AuthResult(
                "temperror", from_domain, why, {"disposition": "none"}
            )
        finally:
            for task in (spf_task, sigs_task, *prefetch):
                if task is not None and not task.done():
                    task.cancel()
        assert spf_result is not None and dkim_result is not None
        assert arc_result is not None and dmarc_result is not None
        action, reason = decide(self.cfg, spf_result, dmarc_result)
        would: str | None = None
        if self.cfg.shadow and action != "accept":
            would, action = action, "accept"
            reason = f"shadow: would {would}: {reason}"
        header = build_authentication_results(
            self.authserv_id, spf_result, dkim_result, dmarc_result, arc_result
        )
        fields: dict[str, Any] = {
            "spf": spf_result.result,
            "dkim": dkim_result.result,
            "dmarc": dmarc_result.result,
            "arc": arc_result.result,
            "action": action,
        }
        if would:
            fields["would"] = would
        fields["reason"] = reason
        if dkim_result.result not in ("pass", "none") and dkim_result.reason:
            fields["dkim_reason"] = dkim_result.reason  # e.g. a signature dkimpy cannot parse
        fields["ms"] = round((time.perf_counter() - started) * 1000, 1)
        log.log(
            logging.INFO if (action != "accept" or would) else logging.DEBUG,
            "auth checked",
            extra=log_fields(msg_id, **fields),
        )
        return AuthReport(
            spf=spf_result,
            dkim=dkim_result,
            dmarc=dmarc_result,
            arc=arc_result,
            authentication_results=header,
            action=action,
            reason=reason,
            would=would,
        )

    async def _prefetch_dmarc(self, domain: str) -> None:
        with contextlib.suppress(Exception):
            await self.resolver.txt(f"_dmarc.{domain}")

    async def close(self) -> None:
        await self.resolver.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._verify_pool is not None:
            self._verify_pool.close()
