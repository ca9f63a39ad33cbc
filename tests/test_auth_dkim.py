"""DKIM verification of every signature (RSA 2048 and Ed25519 keys generated here, signed with
dkimpy), with keys served by a real DNS server on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from mailgate.auth.checker import AuthChecker, AuthReport
from mailgate.config import AuthConfig
from tests.support.dkim_keys import DkimKey, ed25519_key, now, rsa_key, sign_with_expiry
from tests.support.dns_server import DnsTestServer, dns_server

__all__ = ["dns_server"]

MSG = (
    b"From: Alice Example <alice@example.com>\r\n"
    b"To: support@example.test\r\n"
    b"Subject: Refund for order 4711\r\n"
    b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
    b"Message-ID: <m1@example.com>\r\n"
    b"\r\n"
    b"Hello,\r\nplease refund my order.\r\n"
)


@pytest.fixture
async def checker(dns_server: DnsTestServer) -> AsyncIterator[AuthChecker]:
    c = AuthChecker(AuthConfig(nameservers=[dns_server.address], timeout=0.5, budget=5), "mx.test")
    try:
        yield c
    finally:
        await c.close()


async def check(c: AuthChecker, raw: bytes) -> AuthReport:
    return await c.check_message(
        raw, client_ip="192.0.2.1", helo="mail.example.com", mail_from="a@example.com", spf=None
    )


def sigs(report: AuthReport) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = report.dkim.extra["signatures"]
    return out


@pytest.mark.parametrize("make_key", [rsa_key, ed25519_key], ids=["rsa2048", "ed25519"])
async def test_valid_signature(
    dns_server: DnsTestServer, checker: AuthChecker, make_key: Any
) -> None:
    key: DkimKey = make_key()
    key.publish(dns_server, "sel", "example.com")
    report = await check(checker, key.sign(MSG, "sel", "example.com"))
    assert report.dkim.result == "pass", report.dkim.reason
    assert report.dkim.passed and report.dkim.domain == "example.com"
    (sig,) = sigs(report)
    assert sig["domain"] == "example.com"
    assert sig["selector"] == "sel"
    assert sig["algorithm"] == key.algorithm.decode()
    assert sig["result"] == "pass"
    assert "dkim=pass" in report.authentication_results
    assert "header.d=example.com" in report.authentication_results
    assert "header.s=sel" in report.authentication_results


async def test_body_modified_fails(dns_server: DnsTestServer, checker: AuthChecker) -> None:
    key = rsa_key()
    key.publish(dns_server, "sel", "example.com")
    signed = key.sign(MSG, "sel", "example.com").replace(b"refund my order", b"refund to card 9999")
    report = await check(checker, signed)
    assert report.dkim.result == "fail"
    assert sigs(report)[0]["reason"] == "body hash did not verify"


async def test_header_modified_fails(dns_server: DnsTestServer, checker: AuthChecker) -> None:
    key = ed25519_key()
    key.publish(dns_server, "sel", "example.com")
    signed = key.sign(MSG, "sel", "example.com").replace(
        b"Subject: Refund for order 4711", b"Subject: URGENT wire transfer"
    )
    report = await check(checker, signed)
    assert report.dkim.result == "fail"
    assert sigs(report)[0]["reason"] == "signature did not verify"


async def test_expired_signature_fails(dns_server: DnsTestServer, checker: AuthChecker) -> None:
    key = rsa_key()
    key.publish(dns_server, "sel", "example.com")
    day = 86400
    expired = sign_with_expiry(
        key, MSG, "sel", "example.com", signed_at=now() - 3 * day, expires=now() - 2 * day
    )
    report = await check(checker, expired)
    assert report.dkim.result == "fail"
    assert sigs(report)[0]["reason"] == "signature expired"
    # The same construction with a future x= verifies: the tag itself is handled.
    fresh = sign_with_expiry(key, MSG, "sel", "example.com", signed_at=now(), expires=now() + day)
    assert (await check(checker, fresh)).dkim.result == "pass"


async def test_wrong_key_fails(dns_server: DnsTestServer, checker: AuthChecker) -> None:
    rsa_key(n=1).publish(dns_server, "sel", "example.com")  # DNS has another key
    report = await check(checker, rsa_key().sign(MSG, "sel", "example.com"))
    assert report.dkim.result == "fail"
    assert sigs(report)[0]["reason"] == "signature did not verify"


async def test_missing_key_is_permerror(checker: AuthChecker) -> None:
    report = await check(checker, rsa_key().sign(MSG, "gone", "example.com"))
    assert report.dkim.result == "permerror"
    assert sigs(report)[0]["reason"] == "no key for signature"
    assert "dkim=permerror" in report.authentication_results


async def test_revoked_key_is_permerror(dns_server: DnsTestServer, checker: AuthChecker) -> None:
    dns_server.add_dkim_key("sel", "example.com", "v=DKIM1; k=rsa; p=")
    report = await check(checker, rsa_key().sign(MSG, "sel", "example.com"))
    assert report.dkim.result == "permerror"
    assert sigs(report)[0]["reason"] == "key revoked"


async def test_key_lookup_servfail_is_temperror(
    dns_server: DnsTestServer, checker: AuthChecker
) -> None:
    dns_server.set_servfail("sel._domainkey.example.com")
    report = await check(checker, rsa_key().sign(MSG, "sel", "example.com"))
    assert report.dkim.result == "temperror"
    assert "SERVFAIL" in sigs(report)[0]["reason"]


async def test_multiple_signatures_one_bad(dns_server: DnsTestServer, checker: AuthChecker) -> None:
    good, bad = ed25519_key(), rsa_key()
    good.publish(dns_server, "good", "example.com")
    rsa_key(n=1).publish(dns_server, "bad", "esp.example.net")  # not the signing key
    raw = bad.sign(good.sign(MSG, "good", "example.com"), "bad", "esp.example.net")
    report = await check(checker, raw)
    assert report.dkim.result == "pass"
    assert report.dkim.domain == "example.com"
    results = {(s["domain"], s["result"]) for s in sigs(report)}
    assert results == {("example.com", "pass"), ("esp.example.net", "fail")}
    assert report.authentication_results.count("dkim=") == 2


async def test_aligned_signature_preferred(dns_server: DnsTestServer, checker: AuthChecker) -> None:
    esp, own = rsa_key(n=1), ed25519_key()
    esp.publish(dns_server, "s1", "esp.example.net")
    own.publish(dns_server, "s2", "mail.example.com")
    # The ESP's signature is on top, but the From-aligned one names the domain.
    raw = esp.sign(own.sign(MSG, "s2", "mail.example.com"), "s1", "esp.example.net")
    report = await check(checker, raw)
    assert report.dkim.result == "pass"
    assert report.dkim.domain == "mail.example.com"
    assert report.dkim.extra["aligned"] is True


async def test_length_tag_reports_unsigned_content(
    dns_server: DnsTestServer, checker: AuthChecker
) -> None:
    key = rsa_key()
    key.publish(dns_server, "sel", "example.com")
    signed = key.sign(MSG, "sel", "example.com", length=True)
    appended = signed + b"\r\nP.S. send the refund to IBAN XX00 1234 instead.\r\n"
    report = await check(checker, appended)
    # RFC 6376 l=: the signed prefix still verifies, but the appended text is unsigned.
    assert report.dkim.result == "pass"
    (sig,) = sigs(report)
    assert sig["unsignedBodyBytes"] > 0
    assert "unsigned" in sig["reason"]
    untouched = await check(checker, signed)
    assert "unsignedBodyBytes" not in sigs(untouched)[0]


async def test_unsigned_message_is_none(checker: AuthChecker) -> None:
    report = await check(checker, MSG)
    assert report.dkim.result == "none"
    assert sigs(report) == []


async def test_malformed_signature_is_permerror(checker: AuthChecker) -> None:
    raw = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com\r\n" + MSG
    report = await check(checker, raw)
    assert report.dkim.result == "permerror"
    assert sigs(report)[0]["domain"] == "example.com"


def test_openssl_rsa_primitive_agrees_with_dkimpy() -> None:
    """The OpenSSL RSASSA-PKCS1-v1_5 verify gives dkimpy's own answer, valid or not."""
    import hashlib

    import dkim.crypto

    from mailgate.auth.dkim import openssl_rsa_verify

    key = rsa_key()
    private = dkim.crypto.parse_pem_private_key(key.private)
    public = {"modulus": private["modulus"], "publicExponent": private["publicExponent"]}
    other = dkim.crypto.parse_pem_private_key(rsa_key(n=1).private)
    other_public = {"modulus": other["modulus"], "publicExponent": other["publicExponent"]}
    for algo in ("sha256", "sha1"):
        digest = hashlib.new(algo, b"signed header block")
        signature = dkim.crypto.RSASSA_PKCS1_v1_5_sign(digest, private)
        tampered = bytes([signature[0] ^ 1]) + signature[1:]
        for sig, pub in (
            (signature, public),
            (tampered, public),
            (signature, other_public),
            (signature[:-1], public),
        ):
            expected = dkim.crypto.RSASSA_PKCS1_v1_5_verify(digest, sig, pub)
            assert openssl_rsa_verify(digest, sig, pub) == expected
        assert openssl_rsa_verify(digest, signature, public) is True


async def test_unparseable_headers(checker: AuthChecker) -> None:
    broken = b"From: alice@example.com\r\nnot a header line\r\n\r\nbody\r\n"
    assert (await check(checker, broken)).dkim.result == "none"
    signed_broken = b"DKIM-Signature: v=1; d=example.com; s=s\r\n" + broken
    report = await check(checker, signed_broken)
    assert report.dkim.result == "permerror"
    assert "not parseable" in report.dkim.reason


async def test_lf_line_endings_verify(dns_server: DnsTestServer, checker: AuthChecker) -> None:
    # A message saved to disk with LF endings verifies as it did on the wire (CRLF).
    key = rsa_key()
    key.publish(dns_server, "sel", "example.com")
    signed = key.sign(MSG, "sel", "example.com")
    report = await check(checker, signed.replace(b"\r\n", b"\n"))
    assert report.dkim.result == "pass"
