"""DMARC (RFC 7489): policy discovery, identifier alignment, policy and ``pct`` sampling.

Owns: finding the DMARC record for the RFC5322.From domain (``_dmarc.<domain>``, falling back to
the organizational domain, section 6.6.3), parsing it (section 6.3), deciding whether SPF or
DKIM produced an *aligned* pass (section 3.1, relaxed or strict per ``aspf``/``adkim``), which
published policy applies (``p``, or ``sp`` for a subdomain whose record came from its
organizational domain) and the disposition after ``pct`` sampling (section 6.6.4).

It does not decide what mailgate does with the verdict (``checker.py`` applies
``auth.dmarc_enforce``); it reports the published policy and the disposition a conforming
receiver would apply. A trusted ARC sealer may override a failure (RFC 7489 section 7.2,
PolicyOverride ``trusted_forwarder``; RFC 8617 section 7.2): :func:`arc_override`.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from email.utils import getaddresses
from typing import Any

from mailgate.auth.dns import DnsTempError, Resolver
from mailgate.auth.orgdomain import aligned, normalize_domain, org_domain
from mailgate.envelope import AuthResult

_V_DMARC1 = re.compile(r"^v\s*=\s*DMARC1\s*(;|$)")
_POLICIES = ("none", "quarantine", "reject")
_DOWNGRADE = {"reject": "quarantine", "quarantine": "none", "none": "none"}
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:\S+$")


class DmarcSyntaxError(ValueError):
    """A record that must be ignored (RFC 7489 section 6.6.3 step 6)."""


@dataclass(frozen=True)
class DmarcRecord:
    p: str
    sp: str | None = None
    pct: int = 100
    adkim: str = "r"
    aspf: str = "r"
    rua: list[str] = field(default_factory=list)
    ruf: list[str] = field(default_factory=list)
    raw: str = ""


def parse_record(text: str) -> DmarcRecord:
    """Parse a DMARC TXT record (RFC 7489 section 6.3/6.4). Unknown tags are ignored."""
    if not _V_DMARC1.match(text):
        raise DmarcSyntaxError("record does not start with v=DMARC1")
    tags: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise DmarcSyntaxError(f"malformed tag {part.strip()!r}")
        key = key.strip().lower()
        if key not in tags:
            tags[key] = value.strip()
    rua = [u.strip() for u in tags.get("rua", "").split(",") if _URI.match(u.strip())]
    ruf = [u.strip() for u in tags.get("ruf", "").split(",") if _URI.match(u.strip())]
    p = tags.get("p", "").lower()
    sp = tags.get("sp", "").lower() or None
    if p not in _POLICIES or (sp is not None and sp not in _POLICIES):
        # Step 6: with a valid rua, act as if p=none was published; otherwise ignore the record.
        if rua:
            p, sp = "none", None
        else:
            raise DmarcSyntaxError(f"invalid or missing p= ({tags.get('p', '')!r})")
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    pct_text = tags.get("pct", "100")
    pct = int(pct_text) if pct_text.isdigit() and int(pct_text) <= 100 else 100
    return DmarcRecord(
        p=p,
        sp=sp,
        pct=pct,
        adkim=adkim if adkim in ("r", "s") else "r",
        aspf=aspf if aspf in ("r", "s") else "r",
        rua=rua,
        ruf=ruf,
        raw=text,
    )


@dataclass(frozen=True)
class Discovery:
    status: str  # "found" | "none" | "permerror" | "temperror"
    record: DmarcRecord | None = None
    record_domain: str | None = None
    reason: str = ""


async def _records_at(resolver: Resolver, domain: str) -> list[str]:
    txts = await resolver.txt(f"_dmarc.{domain}")
    return [t.decode("utf-8", "replace") for t in txts if _V_DMARC1.match(t.decode("latin-1"))]


async def discover(resolver: Resolver, from_domain: str) -> Discovery:
    """Policy discovery (RFC 7489 section 6.6.3): the From domain, then its org domain."""
    candidates = [from_domain]
    org = org_domain(from_domain)
    if org and org != from_domain:
        candidates.append(org)
    try:
        for domain in candidates:
            records = await _records_at(resolver, domain)
            if len(records) > 1:
                return Discovery(
                    "permerror", None, domain, f"multiple DMARC records at _dmarc.{domain}"
                )
            if len(records) == 1:
                try:
                    return Discovery("found", parse_record(records[0]), domain)
                except DmarcSyntaxError as exc:
                    if domain == candidates[-1]:
                        return Discovery("none", None, domain, f"DMARC record ignored: {exc}")
                    continue
    except DnsTempError as exc:
        return Discovery("temperror", None, None, f"DMARC record lookup failed: {exc}")
    return Discovery("none", None, None, f"no DMARC record for {from_domain}")


def author_domains(from_values: list[str]) -> tuple[list[str], str | None]:
    """The distinct RFC5322.From domains, or an error (RFC 7489 section 6.6.1)."""
    if not from_values:
        return [], "no From header"
    domains: list[str] = []
    for _name, addr in getaddresses(from_values):
        if not addr:
            continue
        if "@" not in addr:
            return [], f"From address without a domain: {addr!r}"
        domain = normalize_domain(addr.rsplit("@", 1)[1])
        if not domain:
            return [], f"From address without a domain: {addr!r}"
        if domain not in domains:
            domains.append(domain)
    if not domains:
        return [], "no usable From address"
    return domains, None


def evaluate(
    from_domain: str,
    discovery: Discovery,
    spf: AuthResult,
    dkim: AuthResult,
    rng: random.Random,
) -> AuthResult:
    """The DMARC verdict for one author domain (RFC 7489 section 6.6.2 + 6.6.4)."""
    extra: dict[str, Any] = {"disposition": "none", "orgDomain": org_domain(from_domain)}
    if discovery.status != "found" or discovery.record is None:
        return AuthResult(discovery.status, from_domain, discovery.reason, extra)
    rec = discovery.record
    subdomain_policy = discovery.record_domain != from_domain
    policy = rec.sp if (subdomain_policy and rec.sp) else rec.p
    sigs = [s for s in dkim.extra.get("signatures", []) if isinstance(s, dict)]
    dkim_pass = list(dict.fromkeys(s.get("domain") for s in sigs if s.get("result") == "pass"))
    dkim_aligned = [d for d in dkim_pass if aligned(d, from_domain, rec.adkim)]
    spf_aligned = spf.result == "pass" and aligned(spf.domain, from_domain, rec.aspf)
    extra.update(
        policy=policy,
        p=rec.p,
        sp=rec.sp,
        pct=rec.pct,
        adkim=rec.adkim,
        aspf=rec.aspf,
        recordDomain=discovery.record_domain,
        alignment={
            "spf": {
                "domain": spf.domain,
                "result": spf.result,
                "aligned": spf_aligned,
                "mode": rec.aspf,
            },
            "dkim": {"domains": dkim_pass, "aligned": dkim_aligned, "mode": rec.adkim},
        },
    )
    if rec.rua:
        extra["rua"] = rec.rua
    if spf_aligned or dkim_aligned:
        how = "dkim" if dkim_aligned else "spf"
        via = dkim_aligned[0] if dkim_aligned else spf.domain
        return AuthResult("pass", from_domain, f"aligned {how} pass ({via})", extra)
    transient = (spf.result == "temperror" and aligned(spf.domain, from_domain, rec.aspf)) or any(
        s.get("result") == "temperror" and aligned(s.get("domain"), from_domain, rec.adkim)
        for s in sigs
    )
    if transient:
        return AuthResult(
            "temperror", from_domain, "no aligned pass; an aligned check failed transiently", extra
        )
    disposition = policy
    if rec.pct < 100:
        sampled = rng.random() * 100 < rec.pct
        extra["sampled"] = sampled
        if not sampled:
            disposition = _DOWNGRADE[policy]
    extra["disposition"] = disposition
    reason = f"no aligned SPF or DKIM pass; p={policy}"
    if disposition != policy:
        reason += f" (pct={rec.pct}: applied {disposition})"
    return AuthResult("fail", from_domain, reason, extra)


_WORST = {"fail": 0, "temperror": 1, "permerror": 2, "pass": 3, "none": 4}
_STRICTEST = {"reject": 0, "quarantine": 1, "none": 2}


async def check_dmarc(
    resolver: Resolver,
    from_values: list[str],
    spf: AuthResult,
    dkim: AuthResult,
    rng: random.Random,
    *,
    domains: list[str] | None = None,
) -> AuthResult:
    """DMARC for a message given its From header values and the SPF/DKIM results.

    Several author domains (RFC 7489 section 6.6.1) are each evaluated; the worst result and
    the strictest disposition win, so adding a second From cannot dodge a reject policy.
    ``domains`` may pass :func:`author_domains` already computed by the caller.
    """
    problem: str | None = None
    if domains is None or not domains:
        domains, problem = author_domains(from_values)
    if problem is not None:
        result = "none" if problem == "no From header" else "permerror"
        return AuthResult(result, None, problem, {"disposition": "none"})
    verdicts = [evaluate(d, await discover(resolver, d), spf, dkim, rng) for d in domains]
    if len(verdicts) == 1:
        return verdicts[0]
    worst = min(
        verdicts,
        key=lambda v: (
            _WORST.get(v.result, 9),
            _STRICTEST.get(v.extra.get("disposition", "none"), 9),
        ),
    )
    extra = dict(worst.extra)
    extra["authorDomains"] = domains
    return AuthResult(worst.result, worst.domain, worst.reason, extra)


def arc_override(dmarc: AuthResult, arc: AuthResult, trusted_sealers: list[str]) -> AuthResult:
    """Lift a DMARC failure for mail a *trusted* forwarder vouches for with a valid ARC chain.

    Only when the chain validates, the newest sealer is in ``trusted_sealers`` and the
    authentication results it recorded on receipt (its ARC-Authentication-Results) show
    ``dmarc=pass``. The result stays ``fail`` (it is what we observed); the disposition becomes
    ``none`` with ``override: trusted_forwarder`` (RFC 7489 section 7.2).
    """
    if dmarc.result != "fail" or arc.result != "pass" or not trusted_sealers:
        return dmarc
    trusted = {normalize_domain(d) for d in trusted_sealers}
    if normalize_domain(arc.domain) not in trusted:
        return dmarc
    chain = arc.extra.get("chain", [])
    newest_aar = arc.extra.get("newestAuthenticationResults", "")
    if not chain or not re.search(r"\bdmarc\s*=\s*pass\b", str(newest_aar), re.IGNORECASE):
        return dmarc
    extra = dict(dmarc.extra)
    extra.update(disposition="none", override="trusted_forwarder", overrideBy=arc.domain)
    return AuthResult(
        dmarc.result,
        dmarc.domain,
        f"{dmarc.reason}; overridden: ARC sealed by trusted forwarder {arc.domain}",
        extra,
    )
