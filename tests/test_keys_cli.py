"""``mailgate keys``: generated tokens and webhook secrets are accepted where placeholders are not."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from click.testing import CliRunner

from mailgate.cli import main
from mailgate.config import load_config
from mailgate.delivery.signing import secret_key


def _json(*args: str) -> dict[str, str]:
    result = CliRunner().invoke(main, ["keys", *args, "--json"])
    assert result.exit_code == 0, result.output
    value: dict[str, str] = json.loads(result.output)
    return value


def test_new_token_is_long_random_and_comes_with_its_digest() -> None:
    a, b = _json("new-token"), _json("new-token")
    assert a["token"] != b["token"]
    assert len(a["token"]) >= 32
    assert set(a["token"]) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    )
    assert a["token_sha256"] == hashlib.sha256(a["token"].encode()).hexdigest()


def test_new_token_plain_output_names_both_values() -> None:
    result = CliRunner().invoke(main, ["keys", "new-token"])
    assert result.exit_code == 0
    lines = dict(line.split(" = ", 1) for line in result.output.splitlines())
    assert hashlib.sha256(lines["token"].encode()).hexdigest() == lines["token_sha256"]


def test_new_webhook_secret_is_a_standard_webhooks_key() -> None:
    secret = _json("new-webhook-secret")["secret"]
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    assert len(key) >= 24
    assert secret_key(secret) == key  # the signer reads it as Standard Webhooks does
    assert _json("new-webhook-secret")["secret"] != secret
    plain = CliRunner().invoke(main, ["keys", "new-webhook-secret"])
    assert plain.output.strip().startswith("whsec_")


def test_generated_values_pass_config_validation(tmp_path: Path) -> None:
    token = _json("new-token")
    secret = _json("new-webhook-secret")["secret"]
    path = tmp_path / "mailgate.toml"
    path.write_text(
        f'[[api.tokens]]\ntoken = "{token["token"]}"\n'
        f'[[api.tokens]]\ntoken_sha256 = "{token["token_sha256"]}"\ntenant = "acme"\n'
        f'[[webhooks]]\nurl = "http://127.0.0.1:9/h"\nsecrets = ["{secret}"]\n'
    )
    cfg = load_config(path, env={})
    assert cfg.api.tokens[0].token == token["token"]
    assert cfg.webhooks[0].secrets == [secret]
