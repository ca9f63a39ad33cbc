"""SPF (RFC 7208) through pyspf, with pyspf's DNS routed through mailgate's resolver.

Owns: the call into pyspf (``spf.query(...).check()``) for the MAIL FROM identity, or the HELO
identity for the null sender (RFC 7208 section 2.4), and the mapping of its outcome to an
``AuthResult``. pyspf implements the record evaluation, macros, the 10-lookup limit and the
void-lookup limit (section 4.6.4); we only feed it DNS.

pyspf looks DNS up through its module global ``spf.DNSLookup``. We replace that global once by a
dispatcher that serves the lookup function bound to the *current thread's* context (a
``ContextVar`` set by :func:`check_spf_sync` in the worker thread); when nothing is bound it
delegates to pyspf's original function, so other users of pyspf in the process are unaffected.
"""

from __future__ import annotations

import contextvars
import ipaddress
import logging
from collections.abc import Callable
from typing import Any

import spf as pyspf

from mailgate.auth.dns import DnsTempError, SyncBridge
from mailgate.envelope import AuthResult

log = logging.getLogger("mailgate.auth")

SpfLookup = Callable[..., list[tuple[tuple[str, str], Any]]]

_CURRENT: contextvars.ContextVar[SpfLookup | None] = contextvars.ContextVar(
    "mailgate_spf_lookup", default=None
)
_ORIGINAL_LOOKUP: SpfLookup = pyspf.DNSLookup

SPF_RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")


def _dispatch_lookup(name: str, qtype: str, strict: Any = True, timeout: Any = None) -> Any:
    fn = _CURRENT.get()
    if fn is None:
        return _ORIGINAL_LOOKUP(name, qtype, strict, timeout)
    try:
        return fn(name, qtype, strict, timeout)
    except DnsTempError as exc:
        # pyspf turns TempError into the "temperror" result (RFC 7208 section 2.6.6).
        raise pyspf.TempError(str(exc)) from None


def _install() -> None:
    if pyspf.DNSLookup is not _dispatch_lookup:
        pyspf.DNSLookup = _dispatch_lookup


_install()


def spf_identity(mail_from: str, helo: str) -> tuple[str, str, str]:
    """(identity kind, sender address pyspf checks, domain) per RFC 7208 section 2.4.

    The null reverse-path ``<>`` is checked as ``postmaster@<HELO>``.
    """
    sender = (mail_from or "").strip().strip("<>")
    if sender and "@" in sender:
        return "mailfrom", sender, sender.rsplit("@", 1)[1].lower().rstrip(".")
    if sender:
        # A local part with no domain: RFC 7208 section 4.3 uses the HELO domain.
        return "mailfrom", f"{sender}@{helo}", (helo or "").lower().rstrip(".")
    return "helo", "", (helo or "").lower().rstrip(".")


def check_spf_sync(bridge: SyncBridge, client_ip: str, helo: str, mail_from: str) -> AuthResult:
    """Run pyspf in the calling (worker) thread with DNS through ``bridge``. Never raises."""
    kind, sender, domain = spf_identity(mail_from, helo)
    extra: dict[str, Any] = {"identity": kind, "clientIp": client_ip}
    if kind == "helo":
        extra["helo"] = helo
    else:
        extra["mailFrom"] = sender
    try:
        ipaddress.ip_address(client_ip)
    except ValueError:
        return AuthResult("permerror", domain or None, f"bad client IP {client_ip!r}", extra)
    if not domain:
        return AuthResult("none", None, "no identity to check (empty MAIL FROM and HELO)", extra)
    token = _CURRENT.set(bridge.spf_lookup)
    q: Any = None
    try:
        q = pyspf.query(i=client_ip, s=sender, h=helo or domain, querytime=0, timeout=30)
        result, _code, explanation = q.check()
    except pyspf.TempError as exc:
        result, explanation = "temperror", str(exc)
    except pyspf.PermError as exc:
        result, explanation = "permerror", str(exc)
    except DnsTempError as exc:
        result, explanation = "temperror", str(exc)
    finally:
        _CURRENT.reset(token)
    result = str(result).lower()
    if result not in SPF_RESULTS:
        result = "permerror"
    reason = _reason(result, domain, client_ip, str(explanation or ""))
    if result in ("fail", "softfail") and explanation:
        extra["explanation"] = str(explanation)
    if getattr(q, "mechanism", None) and result not in ("temperror", "permerror", "none"):
        extra["mechanism"] = str(q.mechanism)
    return AuthResult(result, domain, reason, extra)


def _reason(result: str, domain: str, ip: str, explanation: str) -> str:
    if result == "pass":
        return f"{domain} designates {ip} as permitted sender"
    if result == "fail":
        return f"{domain} does not designate {ip} as permitted sender"
    if result == "softfail":
        return f"{domain} does not designate {ip} as permitted sender (softfail)"
    if result == "neutral":
        return f"{ip} is neither permitted nor denied by {domain}"
    if result == "none":
        return f"{domain} publishes no SPF record"
    return explanation or result
