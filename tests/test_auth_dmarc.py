"""DMARC (RFC 7489): discovery, alignment, p/sp, pct, errors, and the enforcement decision."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mailgate.auth.checker import AuthChecker, AuthReport, decide
from mailgate.auth.dmarc import DmarcSyntaxError, parse_record
from mailgate.auth.orgdomain import aligned, org_domain
from mailgate.config import AuthConfig
from mailgate.envelope import AuthResult
from tests.support.dkim_keys import ed25519_key, rsa_key
from tests.support.dns_server import DnsTestServer, dns_server

__all__ = ["dns_server"]

CLIENT = "192.0.2.1"


def message(from_addr: str, *, extra_from: str | None = None) -> bytes:
    head = f"From: {from_addr}\r\n"
    if extra_from:
        head += f"From: {extra_from}\r\n"
    return (
        head
        + "To: support@example.test\r\nSubject: hello\r\n"
        + "Message-ID: <x@example.com>\r\nDate: Mon, 01 Jan 2024 10:00:00 +0000\r\n\r\nbody\r\n"
    ).encode()


@pytest.fixture
async def checker(dns_server: DnsTestServer) -> AsyncIterator[AuthChecker]:
    c = AuthChecker(
        AuthConfig(nameservers=[dns_server.address], timeout=0.5, budget=5),
        "mx.test",
        rng=random.Random(7),
    )
    try:
        yield c
    finally:
        await c.close()


async def run(c: AuthChecker, raw: bytes, mail_from: str, ip: str = CLIENT) -> AuthReport:
    return await c.check_message(
        raw, client_ip=ip, helo="mail.example.net", mail_from=mail_from, spf=None
    )


# ---------------------------------------------------------------------------- record parsing


def test_parse_record_defaults() -> None:
    rec = parse_record("v=DMARC1; p=reject")
    assert (rec.p, rec.sp, rec.pct, rec.adkim, rec.aspf) == ("reject", None, 100, "r", "r")


def test_parse_record_all_tags() -> None:
    rec = parse_record(
        "v=DMARC1;p=quarantine; sp=none; pct=25; adkim=s; aspf=s; rua=mailto:d@example.com; x=1"
    )
    assert (rec.p, rec.sp, rec.pct, rec.adkim, rec.aspf) == ("quarantine", "none", 25, "s", "s")
    assert rec.rua == ["mailto:d@example.com"]


@pytest.mark.parametrize("text", ["v=DMARC2; p=reject", "p=reject; v=DMARC1", "v=DMARC1; p=bogus"])
def test_parse_record_invalid(text: str) -> None:
    with pytest.raises(DmarcSyntaxError):
        parse_record(text)


def test_invalid_policy_with_rua_acts_as_none() -> None:
    # RFC 7489 section 6.6.3 step 6.
    assert parse_record("v=DMARC1; p=bogus; rua=mailto:d@example.com").p == "none"


def test_org_domain_and_alignment() -> None:
    assert org_domain("a.b.example.co.uk") == "example.co.uk"
    assert org_domain("mail.example.com") == "example.com"
    assert aligned("mail.example.com", "example.com", "r")
    assert not aligned("mail.example.com", "example.com", "s")
    assert aligned("EXAMPLE.com.", "example.com", "s")
    assert not aligned("example.co.uk", "other.co.uk", "r")


# ---------------------------------------------------------------------------- evaluation


async def test_aligned_spf_pass(dns_server: DnsTestServer, checker: AuthChecker) -> None:
    dns_server.add_txt("example.com", f"v=spf1 ip4:{CLIENT} -all")
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    report = await run(checker, message("alice@example.com"), "bounce@example.com")
    assert report.dmarc.result == "pass"
    assert report.dmarc.passed
    assert report.dmarc.domain == "example.com"
    assert report.dmarc.extra["policy"] == "reject"
    assert report.dmarc.extra["alignment"]["spf"]["aligned"] is True
    assert report.action == "accept"


async def test_relaxed_vs_strict_spf_alignment(
    dns_server: DnsTestServer, checker: AuthChecker
) -> None:
    dns_server.add_txt("bounces.example.com", f"v=spf1 ip4:{CLIENT} -all")
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject; aspf=r")
    relaxed = await run(checker, message("alice@example.com"), "b@bounces.example.com")
    assert relaxed.spf.result == "pass"
    assert relaxed.dmarc.result == "pass"

    dns_server.remove("_dmarc.example.com")
    dns_server.add_txt("_dmarc.example.org", "v=DMARC1; p=reject; aspf=s")
    dns_server.add_txt("bounces.example.org", f"v=spf1 ip4:{CLIENT} -all")
    strict = await run(checker, message("alice@example.org"), "b@bounces.example.org")
    assert strict.spf.result == "pass"
    assert strict.dmarc.result == "fail"
    assert strict.dmarc.extra["alignment"]["spf"]["aligned"] is False


async def test_relaxed_vs_strict_dkim_alignment(
    dns_server: DnsTestServer, checker: AuthChecker
) -> None:
    key = ed25519_key()
    key.publish(dns_server, "s", "mail.example.com")
    key.publish(dns_server, "s", "mail.example.org")
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    dns_server.add_txt("_dmarc.example.org", "v=DMARC1; p=reject; adkim=s")
    relaxed = await run(
        checker, key.sign(message("a@example.com"), "s", "mail.example.com"), "x@unrelated.example"
    )
    assert relaxed.dkim.result == "pass"
    assert relaxed.dmarc.result == "pass"
    strict = await run(
        checker, key.sign(message("a@example.org"), "s", "mail.example.org"), "x@unrelated.example"
    )
    assert strict.dkim.result == "pass"
    assert strict.dmarc.result == "fail"
    assert strict.dmarc.extra["alignment"]["dkim"]["aligned"] == []


async def test_unaligned_pass_is_fail(dns_server: DnsTestServer, checker: AuthChecker) -> None:
    # The phishing case: SPF and DKIM pass, but for the attacker's domain, not the From domain.
    key = rsa_key()
    key.publish(dns_server, "s", "attacker.example")
    dns_server.add_txt("attacker.example", f"v=spf1 ip4:{CLIENT} -all")
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    raw = key.sign(message("CEO <ceo@example.com>"), "s", "attacker.example")
    report = await run(checker, raw, "x@attacker.example")
    assert (report.spf.result, report.dkim.result) == ("pass", "pass")
    assert report.dmarc.result == "fail"
    assert report.dmarc.extra["disposition"] == "reject"
    assert "dmarc=fail" in report.authentication_results
    assert report.action == "accept"  # default auth.dmarc_enforce = "tag"
    assert report.reason.startswith("dmarc=fail")


async def test_subdomain_policy(dns_server: DnsTestServer, checker: AuthChecker) -> None:
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject; sp=quarantine")
    sub = await run(checker, message("a@billing.example.com"), "x@other.example")
    assert sub.dmarc.result == "fail"
    assert sub.dmarc.extra["recordDomain"] == "example.com"
    assert sub.dmarc.extra["policy"] == "quarantine"
    assert sub.dmarc.extra["disposition"] == "quarantine"
    top = await run(checker, message("a@example.com"), "x@other.example")
    assert top.dmarc.extra["policy"] == "reject"


async def test_subdomain_without_sp_uses_p(dns_server: DnsTestServer, checker: AuthChecker) -> None:
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=quarantine")
    report = await run(checker, message("a@deep.sub.example.com"), "x@other.example")
    assert report.dmarc.extra["policy"] == "quarantine"


async def test_org_domain_fallback_public_suffix(
    dns_server: DnsTestServer, checker: AuthChecker
) -> None:
    dns_server.add_txt("_dmarc.example.co.uk", "v=DMARC1; p=reject")
    report = await run(checker, message("a@shop.example.co.uk"), "x@other.example")
    assert report.dmarc.result == "fail"
    assert report.dmarc.extra["recordDomain"] == "example.co.uk"
    assert report.dmarc.extra["orgDomain"] == "example.co.uk"
    asked = [q for q in dns_server.queries if q[0].startswith("_dmarc.")]
    assert ("_dmarc.shop.example.co.uk", "TXT") in asked
    assert ("_dmarc.co.uk", "TXT") not in asked


async def test_record_at_subdomain_wins(dns_server: DnsTestServer, checker: AuthChecker) -> None:
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    dns_server.add_txt("_dmarc.news.example.com", "v=DMARC1; p=none")
    report = await run(checker, message("a@news.example.com"), "x@other.example")
    assert report.dmarc.extra["policy"] == "none"
    assert report.dmarc.extra["disposition"] == "none"


async def test_pct_zero_downgrades(dns_server: DnsTestServer, checker: AuthChecker) -> None:
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject; pct=0")
    report = await run(checker, message("a@example.com"), "x@other.example")
    assert report.dmarc.result == "fail"
    assert report.dmarc.extra["sampled"] is False
    assert report.dmarc.extra["disposition"] == "quarantine"  # RFC 7489 6.6.4: next policy down


async def test_pct_samples(dns_server: DnsTestServer, checker: AuthChecker) -> None:
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=quarantine; pct=50")
    dispositions = [
        (await run(checker, message("a@example.com"), "x@other.example")).dmarc.extra["disposition"]
        for _ in range(40)
    ]
    assert set(dispositions) == {"quarantine", "none"}
    assert 8 <= dispositions.count("quarantine") <= 32


async def test_missing_record_is_none(checker: AuthChecker) -> None:
    report = await run(checker, message("a@example.com"), "x@other.example")
    assert report.dmarc.result == "none"
    assert "dmarc=none" in report.authentication_results
    assert report.action == "accept"


async def test_multiple_records_is_permerror(
    dns_server: DnsTestServer, checker: AuthChecker
) -> None:
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=none")
    dns_server.add_txt("_dmarc.example.com", "some other TXT")
    report = await run(checker, message("a@example.com"), "x@other.example")
    assert report.dmarc.result == "permerror"
    assert "multiple" in report.dmarc.reason


async def test_dns_failure_is_temperror(dns_server: DnsTestServer, checker: AuthChecker) -> None:
    dns_server.set_servfail("_dmarc.example.com")
    report = await run(checker, message("a@example.com"), "x@other.example")
    assert report.dmarc.result == "temperror"
    assert report.action == "accept"  # auth.temperror = "accept" by default


async def test_second_from_cannot_dodge_policy(
    dns_server: DnsTestServer, checker: AuthChecker
) -> None:
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    dns_server.add_txt("attacker.example", f"v=spf1 ip4:{CLIENT} -all")
    dns_server.add_txt("_dmarc.attacker.example", "v=DMARC1; p=none")
    raw = message("x@attacker.example", extra_from="ceo@example.com")
    report = await run(checker, raw, "x@attacker.example")
    assert report.dmarc.result == "fail"
    assert report.dmarc.domain == "example.com"
    assert report.dmarc.extra["authorDomains"] == ["attacker.example", "example.com"]


async def test_no_from_header(checker: AuthChecker) -> None:
    raw = b"To: support@example.test\r\nSubject: x\r\n\r\nbody\r\n"
    report = await run(checker, raw, "x@other.example")
    assert report.dmarc.result == "none"


# ---------------------------------------------------------------------------- enforcement


def _fail(disposition: str, policy: str | None = None) -> AuthResult:
    return AuthResult(
        "fail", "example.com", "x", {"policy": policy or disposition, "disposition": disposition}
    )


SPF_PASS = AuthResult("pass", "example.com")


@pytest.mark.parametrize(
    ("enforce", "disposition", "action"),
    [
        ("tag", "reject", "accept"),
        ("quarantine", "reject", "quarantine"),
        ("reject", "reject", "reject"),
        ("reject", "quarantine", "quarantine"),
        ("quarantine", "quarantine", "quarantine"),
        ("tag", "quarantine", "accept"),
        ("reject", "none", "accept"),
    ],
)
def test_decide_dmarc(enforce: str, disposition: str, action: str) -> None:
    cfg = AuthConfig(dmarc_enforce=enforce)  # type: ignore[arg-type]
    got, reason = decide(cfg, SPF_PASS, _fail(disposition))
    assert got == action
    assert reason.startswith("dmarc=fail")


def test_decide_pct_downgrade_is_respected() -> None:
    got, reason = decide(
        AuthConfig(dmarc_enforce="reject"), SPF_PASS, _fail("quarantine", "reject")
    )
    assert got == "quarantine"
    assert "dis=quarantine" in reason


@pytest.mark.parametrize(
    ("spf_fail", "action"), [("tag", "accept"), ("quarantine", "quarantine"), ("reject", "reject")]
)
def test_decide_spf_fail_only_when_configured(spf_fail: str, action: str) -> None:
    cfg = AuthConfig(spf_fail=spf_fail)  # type: ignore[arg-type]
    got, reason = decide(cfg, AuthResult("fail", "example.com"), AuthResult("none"))
    assert got == action
    if action != "accept":
        assert reason.startswith("spf=fail")


@pytest.mark.parametrize("policy", ["accept", "quarantine", "defer"])
def test_decide_temperror_policy(policy: str) -> None:
    cfg = AuthConfig(temperror=policy)  # type: ignore[arg-type]
    got, _ = decide(cfg, SPF_PASS, AuthResult("temperror", "example.com", "DNS timeout"))
    assert got == policy


async def test_enforce_reject_end_to_end_in_process(dns_server: DnsTestServer) -> None:
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    cfg = AuthConfig(
        nameservers=[dns_server.address], timeout=0.5, budget=5, dmarc_enforce="reject"
    )
    c = AuthChecker(cfg, "mx.test")
    try:
        report = await run(c, message("ceo@example.com"), "x@attacker.example")
        shadow = AuthChecker(dataclasses.replace(cfg, shadow=True), "mx.test")
        try:
            shadowed = await run(shadow, message("ceo@example.com"), "x@attacker.example")
        finally:
            await shadow.close()
    finally:
        await c.close()
    assert (report.action, report.would) == ("reject", None)
    assert report.reason == "dmarc=fail p=reject"
    assert (shadowed.action, shadowed.would) == ("accept", "reject")
    assert "would reject" in shadowed.reason
    data: dict[str, Any] = shadowed.to_json()
    assert data["authAction"] == {"action": "accept", "reason": shadowed.reason, "would": "reject"}
