"""AuthChecker as the SMTP handler uses it: budget, dead resolvers, disabled mode, JSON,
Authentication-Results syntax and the header-view filter."""

from __future__ import annotations

import asyncio
import time

import authres
import authres.arc
import authres.dmarc
import pytest

from mailgate.auth.checker import AuthChecker, AuthReport, filter_headers
from mailgate.auth.results import authserv_id_of
from mailgate.config import AuthConfig
from mailgate.envelope import AuthResult
from tests.support.dkim_keys import rsa_key
from tests.support.dns_server import DnsTestServer, SilentUdpPort, dns_server

__all__ = ["dns_server"]

MSG = (
    b"From: Alice <alice@example.com>\r\nTo: support@example.test\r\nSubject: hi\r\n"
    b"Message-ID: <c1@example.com>\r\nDate: Mon, 01 Jan 2024 10:00:00 +0000\r\n\r\nHello\r\n"
)
AR_PARSER = authres.FeatureContext(authres.arc, authres.dmarc)


async def check(c: AuthChecker, raw: bytes = MSG, spf: AuthResult | None = None) -> AuthReport:
    return await c.check_message(
        raw, client_ip="192.0.2.1", helo="mail.example.com", mail_from="a@example.com", spf=spf
    )


async def test_dead_resolver_gives_temperror_within_budget() -> None:
    with SilentUdpPort() as dead:
        cfg = AuthConfig(nameservers=[dead.address], timeout=0.3, budget=1.0, temperror="defer")
        c = AuthChecker(cfg, "mx.test")
        try:
            started = time.monotonic()
            spf = await c.check_spf("192.0.2.1", "mail.example.com", "a@example.com")
            report = await check(c, rsa_key().sign(MSG, "s", "example.com"), spf=spf)
            elapsed = time.monotonic() - started
        finally:
            await c.close()
    assert spf.result == "temperror"
    assert report.dkim.result == "temperror"
    assert report.dmarc.result == "temperror"
    assert report.action == "defer"
    assert report.reason.startswith("dmarc=temperror")
    # Two budgets at most (MAIL FROM, then DATA); generous bound, not a timing assertion.
    assert elapsed < 2 * cfg.budget + 3


async def test_unresponsive_server_for_some_names(dns_server: DnsTestServer) -> None:
    dns_server.add_txt("example.com", "v=spf1 ip4:192.0.2.1 -all")
    dns_server.set_timeout("_dmarc.example.com")
    cfg = AuthConfig(nameservers=[dns_server.address], timeout=0.2, budget=2.0)
    c = AuthChecker(cfg, "mx.test")
    try:
        report = await check(c)
    finally:
        await c.close()
    assert report.spf.result == "pass"
    assert report.dmarc.result == "temperror"
    assert report.action == "accept"  # auth.temperror = accept (and tag)


async def test_budget_exhausted_marks_unfinished_checks(dns_server: DnsTestServer) -> None:
    dns_server.add_txt("example.com", "v=spf1 include:slow.example.com -all")
    dns_server.set_timeout("slow.example.com")
    dns_server.set_timeout("s._domainkey.example.com")
    cfg = AuthConfig(nameservers=[dns_server.address], timeout=5.0, budget=0.5)
    c = AuthChecker(cfg, "mx.test")
    try:
        report = await check(c, rsa_key().sign(MSG, "s", "example.com"))
    finally:
        await c.close()
    assert report.spf.result == "temperror"
    assert report.dkim.result == "temperror"
    assert "budget" in report.dkim.reason or "budget" in str(report.dkim.extra)


async def test_event_loop_stays_responsive_during_checks(dns_server: DnsTestServer) -> None:
    key = rsa_key()
    key.publish(dns_server, "s", "example.com")
    big = MSG + b"x" * 2_000_000 + b"\r\n"
    c = AuthChecker(AuthConfig(nameservers=[dns_server.address], timeout=0.5, budget=5), "mx.test")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    t = asyncio.ensure_future(ticker())
    try:
        report = await check(c, key.sign(big, "s", "example.com"))
    finally:
        t.cancel()
        await c.close()
    assert report.dkim.result == "pass"
    assert ticks > 10  # the loop kept running other tasks while DKIM hashed 2 MB


async def test_disabled_is_quick_and_none() -> None:
    c = AuthChecker(AuthConfig(enabled=False, nameservers=["127.0.0.1:9"]), "mx.test")
    try:
        report = await check(c)
    finally:
        await c.close()
    assert {r.result for r in (report.spf, report.dkim, report.dmarc, report.arc)} == {"none"}
    assert report.spf.reason == "auth disabled"
    assert (report.action, report.reason, report.would) == ("accept", "auth disabled", None)


async def test_given_spf_is_not_recomputed(dns_server: DnsTestServer) -> None:
    c = AuthChecker(AuthConfig(nameservers=[dns_server.address], timeout=0.5), "mx.test")
    given = AuthResult("pass", "example.com", "from MAIL FROM", {"identity": "mailfrom"})
    try:
        report = await check(c, spf=given)
    finally:
        await c.close()
    assert report.spf is given
    assert ("example.com", "TXT") not in dns_server.queries


async def test_report_json_round_trip(dns_server: DnsTestServer) -> None:
    key = rsa_key()
    key.publish(dns_server, "s", "example.com")
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=quarantine")
    c = AuthChecker(AuthConfig(nameservers=[dns_server.address], timeout=0.5), "MX.Test")
    try:
        report = await check(c, key.sign(MSG, "s", "example.com"))
    finally:
        await c.close()
    data = report.to_json()
    assert set(data) == {"spf", "dkim", "dmarc", "arc", "authenticationResults", "authAction"}
    assert data["dkim"]["passed"] is True
    assert data["dkim"]["signatures"][0]["selector"] == "s"
    assert data["dmarc"]["policy"] == "quarantine"
    assert AuthReport.from_json(data) == report


async def test_authentication_results_is_valid_rfc8601(dns_server: DnsTestServer) -> None:
    key = rsa_key()
    key.publish(dns_server, "s", "example.com")
    dns_server.add_txt("example.com", "v=spf1 -all")
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject; sp=none")
    c = AuthChecker(AuthConfig(nameservers=[dns_server.address], timeout=0.5), "mx.test")
    try:
        report = await check(c, key.sign(MSG, "s", "example.com"))
    finally:
        await c.close()
    parsed = AR_PARSER.parse_value(report.authentication_results)
    assert parsed.authserv_id == "mx.test"
    methods = {r.method: r.result for r in parsed.results}
    assert methods == {"spf": "fail", "dkim": "pass", "arc": "none", "dmarc": "pass"}


# ---------------------------------------------------------------------------- header filter


@pytest.mark.parametrize(
    ("value", "authserv"),
    [
        ("mx.test; spf=pass", "mx.test"),
        ("MX.Test 1; dkim=pass", "mx.test"),
        ("(forged) mx.test; none", "mx.test"),
        ("mail.example.com;\r\n spf=pass", "mail.example.com"),
    ],
)
def test_authserv_id_of(value: str, authserv: str) -> None:
    assert authserv_id_of(value) == authserv


def test_filter_headers_removes_forgeries_keeps_others() -> None:
    headers = {
        "From": "a@example.com",
        "Authentication-Results": [
            "MX.test; dkim=pass header.d=bank.example",  # forged: claims our authserv-id
            "mail.example.com; spf=pass smtp.mailfrom=example.com",
        ],
        "Subject": "hi",
    }
    out = filter_headers(headers, "mx.test", "mx.test; spf=fail")
    assert next(iter(out)) == "Authentication-Results"
    assert out["Authentication-Results"] == [
        "mx.test; spf=fail",
        "mail.example.com; spf=pass smtp.mailfrom=example.com",
    ]
    assert out["From"] == "a@example.com" and out["Subject"] == "hi"
    assert headers["Authentication-Results"][0].startswith("MX.test")  # input untouched


def test_filter_headers_single_values_and_case() -> None:
    out = filter_headers(
        {"from": "a@example.com", "authentication-results": "mx.test; spf=pass"},
        "mx.test",
        "mx.test; dkim=none",
    )
    assert out == {"authentication-results": "mx.test; dkim=none", "from": "a@example.com"}
    fresh = filter_headers({"From": "a@example.com"}, "mx.test", "mx.test; none")
    assert fresh == {"Authentication-Results": "mx.test; none", "From": "a@example.com"}
