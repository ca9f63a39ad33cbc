"""``mailgate keys``: generate the secrets an operator puts in ``mailgate.toml``.

The example config ships placeholders that ``serve`` and ``check-config`` refuse (a token
printed in a public repository protects nothing); these commands make the real values.
Nothing is written anywhere: the value goes to stdout, once, for the operator to paste.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from pathlib import Path

import click

from mailgate.cli.common import config_option, json_option, load_cli_config, print_json
from mailgate.store import crypto
from mailgate.store.base import StoreError

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
    """Generate API tokens, webhook signing secrets and encryption keys; rotate the latter."""


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


@keys_group.command("new-encryption-key")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def new_encryption_key_cmd(path: Path) -> None:
    """Write a new key-encryption key to PATH (0600): base64 of 32 random bytes, one line.

    Point ``[store] encryption_key_file`` at it (or put its content in
    ``$MAILGATE_ENCRYPTION_KEY``). Keep it out of the data dir and out of its backups: with the
    data dir alone, the data cannot be read. An existing file is never overwritten.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise click.ClickException(
            f"{path} exists: not overwritten (a lost key is lost data)"
        ) from None
    except OSError as exc:
        raise click.ClickException(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(crypto.new_kek_text() + "\n")
    click.echo(f"wrote a new encryption key to {path}")


@keys_group.command("rotate")
@config_option
@click.option(
    "--new-key-file",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The new key-encryption key (from `mailgate keys new-encryption-key`).",
)
@click.option(
    "--old-key-file",
    default=None,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The current key (default: [store] encryption_key_file or $MAILGATE_ENCRYPTION_KEY).",
)
@click.option("--new-data-key", is_flag=True, help="Also start a new data key for new data.")
def rotate_cmd(
    config_path: str | None, new_key_file: Path, old_key_file: Path | None, new_data_key: bool
) -> None:
    """Re-wrap the data keys under a new key-encryption key (no message is rewritten).

    Then set ``[store] encryption_key_file`` to the new file and restart serve; running
    processes keep working meanwhile (they hold the unwrapped data keys).
    """
    cfg = load_cli_config(config_path)
    try:
        if old_key_file is not None:
            old = crypto.read_kek_file(old_key_file)
        elif cfg.store.encryption_key_file:
            old = crypto.read_kek_file(cfg.store.encryption_key_file)
        elif os.environ.get(crypto.ENV_KEY):
            old = crypto.parse_kek(os.environ[crypto.ENV_KEY])
        else:
            raise click.ClickException("no current key: give --old-key-file")
        new = crypto.read_kek_file(new_key_file)
        n = crypto.rotate(cfg.store.data_dir, old, new, new_data_key=new_data_key)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"re-wrapped {n} data key(s) under key {crypto.kek_id(new)}")
    click.echo(f"now set [store] encryption_key_file = {str(new_key_file)!r} and restart serve")
