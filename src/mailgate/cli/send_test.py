"""``mailgate send-test``: send one message to a running ``mailgate serve``."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import click

from mailgate.cli.common import config_option, load_cli_config
from mailgate.config import parse_hostport


@click.command("send-test")
@config_option
@click.option("--server", default=None, help="HOST:PORT (default: [smtp] listen).")
@click.option("--from", "sender", default="customer@example.org", show_default=True)
@click.option("--to", "recipient", default="support@example.test", show_default=True)
@click.option("--subject", default="Hello from mailgate send-test", show_default=True)
@click.option("--body", default="This is a test message.\n", show_default=True)
@click.option(
    "--file",
    "eml",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Send this .eml file as is instead of a generated message.",
)
def send_test_cmd(
    config_path: str | None,
    server: str | None,
    sender: str,
    recipient: str,
    subject: str,
    body: str,
    eml: str | None,
) -> None:
    """Send a first message and print the server's reply (it includes the message id)."""
    cfg = load_cli_config(config_path)
    try:
        host, port = parse_hostport(server or cfg.smtp.listen)
    except ValueError as exc:
        raise click.ClickException(f"--server: expected {exc}") from None
    if eml:
        with open(eml, "rb") as fh:
            data = fh.read()
    else:
        msg = EmailMessage()
        msg["From"] = sender
        msg["To"] = recipient
        msg["Subject"] = subject
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid(domain="send-test.mailgate")
        msg.set_content(body)
        data = msg.as_bytes()
    try:
        with smtplib.SMTP(host, port, timeout=30, local_hostname="send-test.localhost") as smtp:
            smtp.ehlo()
            smtp.mail(sender)
            code, resp = smtp.rcpt(recipient)
            if code >= 400:
                raise click.ClickException(
                    f"recipient refused: {code} {resp.decode(errors='replace')}"
                )
            code, resp = smtp.data(data)
    except (TimeoutError, OSError, smtplib.SMTPException) as exc:
        raise click.ClickException(f"cannot send to {host}:{port}: {exc}") from None
    text = resp.decode(errors="replace")
    if code >= 400:
        raise click.ClickException(f"message refused: {code} {text}")
    click.echo(f"{code} {text}")
