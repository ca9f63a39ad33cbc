"""``mailgate keys``: generate the secrets an operator puts in ``mailgate.toml``.

The example config ships placeholders that ``serve`` and ``check-config`` refuse (a token
printed in a public repository protects nothing); these commands make the real values.
Nothing is written anywhere: the value goes to stdout, once, for the operator to paste.
"""

from __future__ import annotations

import base64
import hashlib
import secrets

import click

from mailgate.cli.common import json_option, print_json

# 32 random bytes -> 43 url-safe characters, above the config's 32-character minimum.
TOKEN_BYTES = 32
# Standard Webhooks: ``whsec_`` + base64 of the key; 24 to 64 bytes. 32 matches HMAC-SHA256's block.
WEBHOOK_SECRET_BYTES = 32


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(WEBHOOK_SECRET_BYTES)).decode("ascii")


@click.group("keys")
def keys_group() -> None:
    """Generate API tokens and webhook signing secrets for mailgate.toml."""


@keys_group.command("new-token")
@json_option
def new_token_cmd(as_json: bool) -> None:
    """Print a new API bearer token and its SHA-256.

    Put the token in ``[[api.tokens]] token``, or keep it out of the config file and put only
    the digest in ``token_sha256``; give the token itself to the API client.
    """
    token = new_token()
    digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
    if as_json:
        print_json({"token": token, "token_sha256": digest})
    else:
        click.echo(f"token = {token}")
        click.echo(f"token_sha256 = {digest}")


@keys_group.command("new-webhook-secret")
@json_option
def new_webhook_secret_cmd(as_json: bool) -> None:
    """Print a new Standard Webhooks signing secret (``whsec_`` + base64 of 32 random bytes).

    Add it first in ``[[webhooks]] secrets`` (newest first) and give it to the receiver; keep
    the old one listed until the receiver has switched.
    """
    secret = new_webhook_secret()
    if as_json:
        print_json({"secret": secret})
    else:
        click.echo(secret)
