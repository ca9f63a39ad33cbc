"""``mailgate auth FILE|-``: JSON verdicts from the same checker, DNS from the test server."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from mailgate.cli.auth import auth_cmd
from tests.support.dkim_keys import ed25519_key
from tests.support.dns_server import DnsTestServer, dns_server

__all__ = ["dns_server"]

MSG = (
    b"From: Alice <alice@example.com>\r\nTo: support@example.test\r\nSubject: hi\r\n"
    b"Message-ID: <cli@example.com>\r\nDate: Mon, 01 Jan 2024 10:00:00 +0000\r\n\r\nHello\r\n"
)


def zone(dns: DnsTestServer) -> bytes:
    key = ed25519_key()
    key.publish(dns, "s", "example.com")
    dns.add_txt("example.com", "v=spf1 ip4:192.0.2.1 -all")
    dns.add_txt("_dmarc.example.com", "v=DMARC1; p=reject")
    return key.sign(MSG, "s", "example.com")


def test_auth_file(dns_server: DnsTestServer, tmp_path: Path) -> None:
    eml = tmp_path / "m.eml"
    eml.write_bytes(zone(dns_server))
    result = CliRunner().invoke(
        auth_cmd,
        [
            str(eml),
            "--client-ip",
            "192.0.2.1",
            "--mail-from",
            "bounce@example.com",
            "--helo",
            "mail.example.com",
            "--dns",
            dns_server.address,
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {k: data[k]["result"] for k in ("spf", "dkim", "dmarc", "arc")} == {
        "spf": "pass",
        "dkim": "pass",
        "dmarc": "pass",
        "arc": "none",
    }
    assert data["dkim"]["signatures"][0]["algorithm"] == "ed25519-sha256"
    assert data["authenticationResults"].startswith("mx.example.test; spf=pass")


def test_auth_stdin_spf_fail(dns_server: DnsTestServer, tmp_path: Path) -> None:
    signed = zone(dns_server)
    cfg = tmp_path / "mailgate.toml"
    cfg.write_text(
        f'[smtp]\nhostname = "mx.cli.test"\n[auth]\nnameservers = ["{dns_server.address}"]\n'
        'dmarc_enforce = "reject"\n'
    )
    result = CliRunner().invoke(
        auth_cmd,
        ["-", "--client-ip", "198.51.100.7", "--mail-from", "x@example.com", "--config", str(cfg)],
        input=signed,
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["spf"]["result"] == "fail"
    assert data["dmarc"]["result"] == "pass"  # DKIM is aligned
    assert data["authenticationResults"].startswith("mx.cli.test;")


def test_auth_bad_arguments() -> None:
    runner = CliRunner()
    bad_ip = runner.invoke(auth_cmd, ["-", "--client-ip", "nope"], input=MSG)
    assert bad_ip.exit_code == 2 and "IP address" in bad_ip.output
    bad_dns = runner.invoke(
        auth_cmd, ["-", "--client-ip", "192.0.2.1", "--dns", "resolver.example"], input=MSG
    )
    assert bad_dns.exit_code == 2 and "--dns" in bad_dns.output
