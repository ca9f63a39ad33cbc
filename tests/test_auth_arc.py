"""ARC (RFC 8617): a mailing-list forwarder's valid chain, a broken chain, trusted sealers.

The "list" is simulated as a real one behaves: it receives the author's DKIM-signed mail,
records what it verified in an Authentication-Results header, tags the subject and appends a
footer (breaking the author's DKIM signature), then ARC-seals the result with dkimpy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import dkim
import pytest

from mailgate.auth.checker import AuthChecker, AuthReport
from mailgate.config import AuthConfig
from tests.support.dkim_keys import rsa_key
from tests.support.dns_server import DnsTestServer, dns_server

__all__ = ["dns_server"]

AUTHOR_IP = "198.51.100.1"
LIST_IP = "203.0.113.5"
ORIGINAL = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: support-list@lists.example.org\r\n"
    b"Subject: Card declined\r\n"
    b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
    b"Message-ID: <arc1@example.com>\r\n"
    b"\r\n"
    b"My card was declined twice.\r\n"
)


def arc_seal(message: bytes, domain: str, selector: str, results: str) -> bytes:
    """What an ARC-sealing intermediary adds: its A-R, then the ARC set (RFC 8617 5.1)."""
    with_ar = f"Authentication-Results: {domain}; {results}\r\n".encode() + message
    key = rsa_key(n=2)
    headers = dkim.arc_sign(
        with_ar, selector.encode(), domain.encode(), key.private, domain.encode()
    )
    return b"".join(headers) + with_ar


def through_list(signed: bytes) -> bytes:
    tagged = signed.replace(b"Subject: Card declined", b"Subject: [support-list] Card declined")
    footer = b"--\r\nsupport-list mailing list\r\n"
    return arc_seal(
        tagged + footer,
        "lists.example.org",
        "arc",
        "spf=pass smtp.mailfrom=example.com; dkim=pass header.d=example.com; "
        "dmarc=pass header.from=example.com",
    )


@pytest.fixture
def zone(dns_server: DnsTestServer) -> DnsTestServer:
    rsa_key().publish(dns_server, "s1", "example.com")
    rsa_key(n=2).publish(dns_server, "arc", "lists.example.org")
    rsa_key(n=2).publish(dns_server, "arc2", "relay.example.net")
    dns_server.add_txt("example.com", f"v=spf1 ip4:{AUTHOR_IP} -all")
    dns_server.add_txt("lists.example.org", f"v=spf1 ip4:{LIST_IP} -all")
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    return dns_server


async def make_checker(dns: DnsTestServer, **kw: object) -> AuthChecker:
    cfg = AuthConfig(
        nameservers=[dns.address],
        timeout=0.5,
        budget=5,
        dmarc_enforce="reject",
        **kw,  # type: ignore[arg-type]
    )
    return AuthChecker(cfg, "mx.test")


@pytest.fixture
async def checker(zone: DnsTestServer) -> AsyncIterator[AuthChecker]:
    c = await make_checker(zone)
    try:
        yield c
    finally:
        await c.close()


async def from_list(c: AuthChecker, raw: bytes) -> AuthReport:
    return await c.check_message(
        raw,
        client_ip=LIST_IP,
        helo="mail.lists.example.org",
        mail_from="support-list-bounces@lists.example.org",
        spf=None,
    )


async def test_direct_mail_has_no_arc(checker: AuthChecker) -> None:
    signed = rsa_key().sign(ORIGINAL, "s1", "example.com")
    report = await checker.check_message(
        signed, client_ip=AUTHOR_IP, helo="mx.example.com", mail_from="alice@example.com", spf=None
    )
    assert (report.dkim.result, report.dmarc.result, report.arc.result) == ("pass", "pass", "none")
    assert "arc=none" in report.authentication_results


async def test_list_forwarded_mail_with_valid_chain(checker: AuthChecker) -> None:
    forwarded = through_list(rsa_key().sign(ORIGINAL, "s1", "example.com"))
    report = await from_list(checker, forwarded)
    # The list broke the author's signature, so DMARC fails on its own...
    assert report.dkim.result == "fail"
    assert report.spf.result == "pass" and report.spf.domain == "lists.example.org"
    assert report.dmarc.result == "fail"
    # ...but the ARC chain shows who forwarded it and what it saw on receipt.
    assert report.arc.result == "pass", report.arc.reason
    assert report.arc.domain == "lists.example.org"
    assert report.arc.extra["sealers"] == ["lists.example.org"]
    assert report.arc.extra["forwarded"] is True
    assert "dkim=pass header.d=example.com" in report.arc.extra["originalAuthenticationResults"]
    (hop,) = report.arc.extra["chain"]
    assert hop["instance"] == 1 and hop["cv"] == "none" and hop["asValid"] and hop["amsValid"]
    assert "arc=pass" in report.authentication_results
    assert report.action == "reject"  # the sealer is not trusted: p=reject still applies


async def test_trusted_sealer_overrides_dmarc_fail(zone: DnsTestServer) -> None:
    forwarded = through_list(rsa_key().sign(ORIGINAL, "s1", "example.com"))
    c = await make_checker(zone, arc_trusted_sealers=["lists.example.org"])
    try:
        report = await from_list(c, forwarded)
    finally:
        await c.close()
    assert report.dmarc.result == "fail"
    assert report.dmarc.extra["override"] == "trusted_forwarder"
    assert report.dmarc.extra["disposition"] == "none"
    assert report.action == "accept"


async def test_two_hop_chain(checker: AuthChecker) -> None:
    once = through_list(rsa_key().sign(ORIGINAL, "s1", "example.com"))
    twice = arc_seal(
        once, "relay.example.net", "arc2", "arc=pass; spf=pass smtp.mailfrom=lists.example.org"
    )
    report = await from_list(checker, twice)
    assert report.arc.result == "pass", report.arc.reason
    assert report.arc.extra["sealers"] == ["lists.example.org", "relay.example.net"]
    assert report.arc.domain == "relay.example.net"
    assert [h["cv"] for h in report.arc.extra["chain"]] == ["none", "pass"]


async def test_broken_chain_fails(checker: AuthChecker) -> None:
    forwarded = through_list(rsa_key().sign(ORIGINAL, "s1", "example.com"))
    tampered = forwarded.replace(b"declined twice", b"declined; wire money to IBAN XX00")
    report = await from_list(checker, tampered)
    assert report.arc.result == "fail"
    assert report.arc.reason
    assert "arc=fail" in report.authentication_results


async def test_missing_seal_key_fails(zone: DnsTestServer, checker: AuthChecker) -> None:
    forwarded = through_list(rsa_key().sign(ORIGINAL, "s1", "example.com"))
    zone.remove("arc._domainkey.lists.example.org")
    report = await from_list(checker, forwarded)
    assert report.arc.result == "fail"


async def test_seal_key_servfail_is_temperror(zone: DnsTestServer, checker: AuthChecker) -> None:
    forwarded = through_list(rsa_key().sign(ORIGINAL, "s1", "example.com"))
    zone.remove("arc._domainkey.lists.example.org")
    zone.set_servfail("arc._domainkey.lists.example.org")
    report = await from_list(checker, forwarded)
    assert report.arc.result == "temperror"
