"""SPF (RFC 7208) through mailgate's SPF path with DNS from a real server on loopback.

The openspf RFC 7208 test suite runs case by case: each scenario's zone data is served by a
``DnsTestServer`` and checked through ``AuthChecker.check_spf``. Known differences are listed,
with their reasons, in ``tests/spf_suite_allowlist.txt`` and run as strict expected failures.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mailgate.auth.checker import AuthChecker
from mailgate.config import AuthConfig
from tests.support.dns_server import DnsTestServer, dns_server

__all__ = ["dns_server"]

# In the repository (fixtures/corpus, see its SOURCES.md): a missing suite fails collection.
SUITE = Path(__file__).parents[1] / "fixtures" / "corpus" / "spf" / "rfc7208-tests.yml"
ALLOWLIST = Path(__file__).parent / "spf_suite_allowlist.txt"


def _allowlist() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in ALLOWLIST.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, _, reason = line.partition("#")
        out[name.strip()] = reason.strip()
    return out


def _scenarios() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(SUITE.read_text(encoding="utf-8")))


SCENARIOS = _scenarios()
KNOWN = _allowlist()
CASES = [
    pytest.param(
        i,
        name,
        id=name,
        marks=[pytest.mark.xfail(strict=True, reason=KNOWN[name])] if name in KNOWN else [],
    )
    for i, scenario in enumerate(SCENARIOS)
    for name in scenario["tests"]
]


@pytest.fixture(scope="module")
def suite_servers() -> Iterator[dict[int, DnsTestServer]]:
    """One DNS server per scenario (their zones overlap), started on first use."""
    servers: dict[int, DnsTestServer] = {}
    try:
        yield servers
    finally:
        for srv in servers.values():
            srv.stop()


def _server_for(servers: dict[int, DnsTestServer], index: int) -> DnsTestServer:
    if index not in servers:
        srv = DnsTestServer()
        srv.load_zonedata(SCENARIOS[index]["zonedata"])
        servers[index] = srv.start()
    return servers[index]


def test_suite_is_present() -> None:
    assert SUITE.exists(), f"RFC 7208 suite missing at {SUITE}"
    assert len(CASES) > 200


@pytest.mark.parametrize(("index", "name"), CASES)
async def test_rfc7208_suite(
    suite_servers: dict[int, DnsTestServer], index: int, name: str
) -> None:
    case = SCENARIOS[index]["tests"][name]
    srv = _server_for(suite_servers, index)
    # Per-query timeout short: the suite's TIMEOUT names never answer.
    cfg = AuthConfig(nameservers=[srv.address], timeout=0.3, budget=10.0)
    checker = AuthChecker(cfg, "mx.test")
    try:
        got = await checker.check_spf(case["host"], case.get("helo", ""), case.get("mailfrom", ""))
    finally:
        await checker.close()
    expected = case["result"] if isinstance(case["result"], list) else [case["result"]]
    assert got.result in expected, f"{name}: got {got.result} ({got.reason}), want {expected}"


def test_allowlist_names_exist() -> None:
    names = {n for s in SCENARIOS for n in s["tests"]}
    assert set(KNOWN) <= names


# ---------------------------------------------------------------------------- mailgate specifics


def _checker(dns: DnsTestServer, **kw: Any) -> AuthChecker:
    return AuthChecker(
        AuthConfig(nameservers=[dns.address], timeout=0.5, budget=3.0, **kw), "mx.test"
    )


@pytest.mark.parametrize(
    ("record", "ip", "result"),
    [
        ("v=spf1 ip4:192.0.2.0/24 -all", "192.0.2.7", "pass"),
        ("v=spf1 ip4:192.0.2.0/24 -all", "198.51.100.1", "fail"),
        ("v=spf1 ip4:192.0.2.0/24 ~all", "198.51.100.1", "softfail"),
        ("v=spf1 ip4:192.0.2.0/24 ?all", "198.51.100.1", "neutral"),
        ("v=spf1 ip4:192.0.2.0/33 -all", "192.0.2.7", "permerror"),
        ("v=spf1 a mx -all", "192.0.2.10", "pass"),
        ("v=spf1 ip6:2001:db8::/32 -all", "2001:db8::25", "pass"),
    ],
)
async def test_results(dns_server: DnsTestServer, record: str, ip: str, result: str) -> None:
    dns_server.add_txt("example.com", record)
    dns_server.add_a("example.com", "192.0.2.9")
    dns_server.add_mx("example.com", "mx.example.com")
    dns_server.add_a("mx.example.com", "192.0.2.10")
    checker = _checker(dns_server)
    try:
        got = await checker.check_spf(ip, "mail.example.com", "alice@example.com")
    finally:
        await checker.close()
    assert got.result == result, got.reason
    assert got.domain == "example.com"
    assert got.extra["identity"] == "mailfrom"
    assert got.reason


async def test_no_record_is_none(dns_server: DnsTestServer) -> None:
    checker = _checker(dns_server)
    try:
        got = await checker.check_spf("192.0.2.1", "mail.example.com", "alice@nospf.example.com")
    finally:
        await checker.close()
    assert got.result == "none"


async def test_null_sender_checks_helo_identity(dns_server: DnsTestServer) -> None:
    dns_server.add_txt("mail.example.com", "v=spf1 ip4:192.0.2.1 -all")
    checker = _checker(dns_server)
    try:
        ok = await checker.check_spf("192.0.2.1", "mail.example.com", "")
        bad = await checker.check_spf("192.0.2.2", "mail.example.com", "<>")
    finally:
        await checker.close()
    assert (ok.result, ok.domain, ok.extra["identity"]) == ("pass", "mail.example.com", "helo")
    assert bad.result == "fail"


async def test_servfail_is_temperror(dns_server: DnsTestServer) -> None:
    dns_server.set_servfail("example.com", "TXT")
    checker = _checker(dns_server)
    try:
        got = await checker.check_spf("192.0.2.1", "mail.example.com", "a@example.com")
    finally:
        await checker.close()
    assert got.result == "temperror"
    assert "SERVFAIL" in got.reason


async def test_lookup_limit_is_permerror(dns_server: DnsTestServer) -> None:
    includes = " ".join(f"include:i{n}.example.com" for n in range(11))
    dns_server.add_txt("example.com", f"v=spf1 {includes} -all")
    for n in range(11):
        dns_server.add_txt(f"i{n}.example.com", "v=spf1 ip4:198.51.100.1 -all")
    checker = _checker(dns_server)
    try:
        got = await checker.check_spf("192.0.2.1", "mail.example.com", "a@example.com")
    finally:
        await checker.close()
    assert got.result == "permerror"


async def test_void_lookup_limit_is_permerror(dns_server: DnsTestServer) -> None:
    dns_server.add_txt(
        "example.com", "v=spf1 a:v1.example.com a:v2.example.com a:v3.example.com -all"
    )
    checker = _checker(dns_server)
    try:
        got = await checker.check_spf("192.0.2.1", "mail.example.com", "a@example.com")
    finally:
        await checker.close()
    assert got.result == "permerror"
    assert "oid" in got.reason  # "Void lookup limit of 2 exceeded"


async def test_bad_client_ip_is_permerror(dns_server: DnsTestServer) -> None:
    checker = _checker(dns_server)
    try:
        got = await checker.check_spf("not-an-ip", "mail.example.com", "a@example.com")
    finally:
        await checker.close()
    assert got.result == "permerror"


async def test_disabled_returns_none_without_dns(dns_server: DnsTestServer) -> None:
    checker = _checker(dns_server, enabled=False)
    try:
        got = await checker.check_spf("192.0.2.1", "mail.example.com", "a@example.com")
    finally:
        await checker.close()
    assert (got.result, got.reason) == ("none", "auth disabled")
    assert dns_server.queries == []
