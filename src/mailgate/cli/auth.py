"""``mailgate auth``: run SPF, DKIM, ARC and DMARC on a message file and print the verdicts.

For operators ("why was this rejected?") and tests. Uses the same ``AuthChecker`` as the SMTP
handler, with the ``[auth]`` config (nameservers, timeouts, enforcement) unless ``--dns``
overrides the nameservers. Checks run even when ``auth.enabled`` is false in the config.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import sys
from typing import BinaryIO

import click

from mailgate.auth.checker import AuthChecker, AuthReport
from mailgate.auth.dns import parse_nameserver
from mailgate.cli.common import config_option, load_cli_config
from mailgate.config import AuthConfig


@click.command("auth")
@click.argument("message", type=click.File("rb"), metavar="FILE|-")
@click.option("--client-ip", required=True, help="The connecting client's IP address.")
@click.option("--mail-from", default="", help="The envelope sender (MAIL FROM); empty for <>.")
@click.option("--helo", default="", help="The HELO/EHLO name (default: the MAIL FROM domain).")
@click.option(
    "--dns",
    "nameservers",
    multiple=True,
    metavar="HOST:PORT",
    help="Nameserver to ask instead of [auth] nameservers (repeatable).",
)
@click.option("--authserv-id", default=None, help="authserv-id (default: [smtp] hostname).")
@config_option
def auth_cmd(
    message: BinaryIO,
    client_ip: str,
    mail_from: str,
    helo: str,
    nameservers: tuple[str, ...],
    authserv_id: str | None,
    config_path: str | None,
) -> None:
    """Check a message's sender authentication and print JSON (spf, dkim, dmarc, arc, ...)."""
    cfg = load_cli_config(config_path)
    try:
        ipaddress.ip_address(client_ip)
    except ValueError:
        raise click.BadParameter(
            f"{client_ip!r} is not an IP address", param_hint="--client-ip"
        ) from None
    for ns in nameservers:
        try:
            parse_nameserver(ns)
        except ValueError:
            raise click.BadParameter(
                f"{ns!r}: expected IP or IP:PORT", param_hint="--dns"
            ) from None
    auth_cfg = dataclasses.replace(cfg.auth, enabled=True)
    if nameservers:
        auth_cfg = dataclasses.replace(auth_cfg, nameservers=list(nameservers))
    raw = message.read()
    mail_from = mail_from.strip().strip("<>")
    if not helo:
        helo = mail_from.rsplit("@", 1)[1] if "@" in mail_from else "unknown"
    report = asyncio.run(
        _check(auth_cfg, authserv_id or cfg.smtp.hostname, raw, client_ip, helo, mail_from)
    )
    click.echo(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    sys.stdout.flush()


async def _check(
    auth_cfg: AuthConfig, authserv_id: str, raw: bytes, client_ip: str, helo: str, mail_from: str
) -> AuthReport:
    checker = AuthChecker(auth_cfg, authserv_id)
    try:
        return await checker.check_message(
            raw, client_ip=client_ip, helo=helo, mail_from=mail_from, spf=None
        )
    finally:
        await checker.close()
