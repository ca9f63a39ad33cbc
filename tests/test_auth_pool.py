"""DKIM/ARC verification in worker processes (``auth.verify_processes``), keys prefetched."""

from __future__ import annotations

from mailgate.auth.checker import AuthChecker
from mailgate.auth.pool import StaticKeys, key_names, verify_job
from mailgate.config import AuthConfig
from tests.support.dkim_keys import ed25519_key, rsa_key
from tests.support.dns_server import DnsTestServer, dns_server

__all__ = ["dns_server"]

MSG = (
    b"From: Alice <alice@example.com>\r\nTo: support@example.test\r\nSubject: pooled\r\n"
    b"Message-ID: <pool@example.com>\r\nDate: Mon, 01 Jan 2024 10:00:00 +0000\r\n\r\nHello\r\n"
)


def test_key_names_from_signatures_and_seals() -> None:
    raw = (
        b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=Lists.Example.org; s=arc;\r\n"
        b"\tb=abc\r\n"
        b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com;\r\n s=sel1; h=from; bh=x; b=y\r\n"
        b"DKIM-Signature: v=1; d=example.com; s=sel1; b=z\r\n"
        b"DKIM-Signature: garbage without tags\r\n" + MSG
    )
    assert key_names(raw) == ["arc._domainkey.lists.example.org", "sel1._domainkey.example.com"]
    assert key_names(MSG) == []


def test_verify_job_reports_a_missing_key_name() -> None:
    signed = rsa_key().sign(MSG, "s1", "example.com")
    status, payload = verify_job(signed, "example.com", {})
    assert (status, payload) == ("miss", "s1._domainkey.example.com")
    keys = StaticKeys({"s1._domainkey.example.com": [rsa_key().record.encode()]})
    assert keys.dkim_txt(b"S1._domainkey.example.com.") == rsa_key().record.encode()
    status, (dkim_result, arc_result) = verify_job(
        signed, "example.com", {"s1._domainkey.example.com": [rsa_key().record.encode()]}
    )
    assert (status, dkim_result.result, arc_result.result) == ("ok", "pass", "none")
    status, (dkim_result, _) = verify_job(
        signed, "example.com", {"s1._domainkey.example.com": "DNS timeout for s1"}
    )
    assert dkim_result.result == "temperror"


async def test_checker_with_verification_process(dns_server: DnsTestServer) -> None:
    good, other = ed25519_key(), rsa_key()
    good.publish(dns_server, "s1", "example.com")
    rsa_key(n=1).publish(dns_server, "s3", "example.com")  # not the key `other` signs with
    dns_server.add_cname("s2._domainkey.example.com", "s1._domainkey.example.com")
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    cfg = AuthConfig(nameservers=[dns_server.address], timeout=0.5, budget=20, verify_processes=1)
    c = AuthChecker(cfg, "mx.test")
    try:
        ok = await c.check_message(
            good.sign(MSG, "s2", "example.com"),
            client_ip="192.0.2.1",
            helo="mail.example.com",
            mail_from="a@example.com",
            spf=None,
        )
        bad = await c.check_message(
            other.sign(MSG, "s3", "example.com"),
            client_ip="192.0.2.1",
            helo="mail.example.com",
            mail_from="a@example.com",
            spf=None,
        )
        assert c._verify_pool is not None  # the pool did the work (no fallback)
    finally:
        await c.close()
    assert (ok.dkim.result, ok.dmarc.result) == ("pass", "pass")
    assert (bad.dkim.result, bad.dmarc.result) == ("fail", "fail")
