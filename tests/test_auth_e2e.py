"""Enforcement end to end: ``mailgate serve`` (a real subprocess) with its resolver pointed at
the loopback DNS server. Reject gets 550 at the end of DATA and nothing is stored; quarantine is
accepted and lands in quarantine; shadow mode only records; a dead resolver never blocks."""

from __future__ import annotations

import smtplib
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.dkim_keys import rsa_key
from tests.support.dns_server import DnsTestServer, SilentUdpPort, dns_server
from tests.support.server import MailgateServer

__all__ = ["dns_server"]

pytestmark = pytest.mark.slow

Factory = Callable[..., MailgateServer]


def phish(message_id: str = "<p1@attacker.example>") -> bytes:
    return (
        "From: CEO <ceo@example.com>\r\n"
        "To: support@example.test\r\n"
        "Subject: Refund this card now\r\n"
        f"Message-ID: {message_id}\r\n"
        "Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
        "Authentication-Results: mx.test.mailgate; dmarc=pass header.from=example.com\r\n"
        "\r\n"
        "Refund card 4111 1111 1111 1111 immediately.\r\n"
    ).encode()


def auth_toml(nameserver: str, **settings: str) -> str:
    lines = [f'nameservers = ["{nameserver}"]', 'timeout = "500ms"', 'budget = "3s"']
    lines += [f"{k} = {v}" for k, v in settings.items()]
    return "\n".join(lines)


@pytest.fixture
def zone(dns_server: DnsTestServer) -> DnsTestServer:
    dns_server.add_txt("example.com", "v=spf1 ip4:192.0.2.0/24 -all")  # not 127.0.0.1
    dns_server.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    rsa_key().publish(dns_server, "s1", "example.com")
    return dns_server


def test_reject_gets_550_and_is_not_stored(zone: DnsTestServer, mailgate_server: Factory) -> None:
    srv = mailgate_server(auth=True, auth_extra=auth_toml(zone.address, dmarc_enforce='"reject"'))
    with pytest.raises(smtplib.SMTPDataError) as err:
        srv.send(phish(), mail_from="billing@attacker.example")
    assert err.value.smtp_code == 550
    assert b"5.7.1" in err.value.smtp_error
    assert srv.rows() == []
    # The same server accepts the domain's own, DKIM-signed mail.
    own = phish("<ok@example.com>").replace(b"Refund this card now", b"Quarterly update")
    good = rsa_key().sign(own, "s1", "example.com")
    srv.send(good, mail_from="ceo@example.com")
    (row,) = srv.wait_processed(1)
    assert row["state"] == "processed"


def test_quarantine_lands_in_quarantine(zone: DnsTestServer, mailgate_server: Factory) -> None:
    srv = mailgate_server(
        auth=True, auth_extra=auth_toml(zone.address, dmarc_enforce='"quarantine"')
    )
    reply = srv.send(phish(), mail_from="billing@attacker.example")
    assert reply  # 250
    (row,) = srv.wait_processed(1)
    assert row["state"] == "quarantined"
    (env,) = srv.envelopes()
    assert env["dmarc"]["result"] == "fail"
    assert env["dmarc"]["policy"] == "reject"
    assert env["authAction"]["action"] == "quarantine"
    assert env["quarantine"]["reason"] == "dmarc"
    with srv.db() as conn:
        held = conn.execute("SELECT reason FROM quarantine").fetchall()
    assert [r[0] for r in held] == ["dmarc"]


def test_tag_mode_records_results_and_filters_forged_headers(
    zone: DnsTestServer, mailgate_server: Factory
) -> None:
    srv = mailgate_server(auth=True, auth_extra=auth_toml(zone.address))
    srv.send(phish(), mail_from="billing@attacker.example")
    (row,) = srv.wait_processed(1)
    assert row["state"] == "processed"
    (env,) = srv.envelopes()
    assert (env["spf"]["result"], env["dkim"]["result"], env["dmarc"]["result"]) == (
        "none",
        "none",
        "fail",
    )
    assert env["authAction"]["action"] == "accept"
    ours = env["authenticationResults"]
    assert ours.startswith("mx.test.mailgate;") and "dmarc=fail" in ours
    headers: dict[str, Any] = env["headers"]
    ar_key = next(k for k in headers if k.lower() == "authentication-results")
    values = headers[ar_key] if isinstance(headers[ar_key], list) else [headers[ar_key]]
    assert values == [ours]  # the forged "mx.test.mailgate; dmarc=pass" is gone


def test_shadow_mode_records_would(zone: DnsTestServer, mailgate_server: Factory) -> None:
    srv = mailgate_server(
        auth=True,
        auth_extra=auth_toml(zone.address, dmarc_enforce='"reject"', shadow="true"),
    )
    srv.send(phish(), mail_from="billing@attacker.example")
    srv.wait_processed(1)
    (env,) = srv.envelopes()
    assert env["authAction"]["action"] == "accept"
    assert env["authAction"]["would"] == "reject"


def test_dead_resolver_does_not_block_the_session(mailgate_server: Factory) -> None:
    with SilentUdpPort() as dead:
        srv = mailgate_server(
            auth=True,
            auth_extra=f'nameservers = ["{dead.address}"]\ntimeout = "300ms"\nbudget = "1s"',
        )
        srv.send(phish(), mail_from="billing@attacker.example")
        srv.wait_processed(1)
    (env,) = srv.envelopes()
    assert env["spf"]["result"] == "temperror"
    assert env["dmarc"]["result"] == "temperror"
    assert env["authAction"]["action"] == "accept"


def test_dead_resolver_defer_policy(mailgate_server: Factory) -> None:
    with SilentUdpPort() as dead:
        srv = mailgate_server(
            auth=True,
            auth_extra=(
                f'nameservers = ["{dead.address}"]\ntimeout = "300ms"\nbudget = "1s"\n'
                'temperror = "defer"'
            ),
        )
        with pytest.raises(smtplib.SMTPDataError) as err:
            srv.send(phish(), mail_from="billing@attacker.example")
    assert err.value.smtp_code == 451
    assert srv.rows() == []
