"""Rules in mailgate.toml and in pipeline.rules_file: loaded at config time, errors with file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

import mailgate.pipeline.runner  # noqa: F401  (registers the rule and stage validators)
from mailgate.app import load_config
from mailgate.config import ConfigError
from mailgate.pipeline.rules import load_rules

MAIN = """\
[pipeline]
rules_file = "rules.toml"

[[rules]]
name = "billing"
if.any = [{ subject = "/invoice|refund|billing/i" }, { to = "/billing@/" }]
then = { queue = "billing", tags = ["billing"], priority = "high" }
"""

RULES = """\
[[rules]]
name = "security"
if.any = [{ subject = "/password|breach|2fa/i" }]
then = { queue = "security", priority = "urgent" }

[[rules]]
name = "bad"
if.all = [{ subject = "fine" }, { subject = "/unclosed(/" }]
then = { queue = "x" }
"""


def test_inline_then_file_order(tmp_path: Path) -> None:
    (tmp_path / "m.toml").write_text(MAIN)
    (tmp_path / "rules.toml").write_text(RULES.split('[[rules]]\nname = "bad"')[0])
    cfg = load_config(tmp_path / "m.toml", env={})
    rs = load_rules(cfg)
    assert [r.name for r in rs.rules] == ["billing", "security"]
    assert rs.rules[1].source.endswith("rules.toml")


def test_error_in_rules_file_names_file_line_and_key(tmp_path: Path) -> None:
    (tmp_path / "m.toml").write_text(MAIN)
    (tmp_path / "rules.toml").write_text(RULES)
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "m.toml", env={})
    msg = str(err.value)
    assert f"{tmp_path / 'rules.toml'}:8:" in msg
    assert "rules[1].if.all[1].subject = '/unclosed(/': expected a valid regex" in msg


def test_error_inline_names_config_line(tmp_path: Path) -> None:
    text = MAIN.replace('priority = "high"', 'priority = "hgh"').replace(
        'rules_file = "rules.toml"', ""
    )
    (tmp_path / "m.toml").write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "m.toml", env={})
    assert str(err.value).startswith(f"{tmp_path / 'm.toml'}:7: rules[0].then.priority = 'hgh'")


def test_missing_rules_file(tmp_path: Path) -> None:
    (tmp_path / "m.toml").write_text(MAIN)
    with pytest.raises(ConfigError, match=r"pipeline\.rules_file = 'rules\.toml': file not found"):
        load_config(tmp_path / "m.toml", env={})


def test_bad_toml_in_rules_file(tmp_path: Path) -> None:
    (tmp_path / "m.toml").write_text(MAIN)
    (tmp_path / "rules.toml").write_text("[[rules]\nname=")
    with pytest.raises(ConfigError, match=r"rules\.toml: invalid TOML"):
        load_config(tmp_path / "m.toml", env={})


def test_bad_entity_pattern(tmp_path: Path) -> None:
    (tmp_path / "m.toml").write_text(
        '[[pipeline.entities]]\nname = "sku"\npattern = "SKU-(\\\\d+"\n'
    )
    with pytest.raises(
        ConfigError, match=r"pipeline.entities\[0\].pattern = .*expected a valid regex"
    ):
        load_config(tmp_path / "m.toml", env={})


def test_webhook_of_other_tenant_refused_for_tenant_rule(tmp_path: Path) -> None:
    (tmp_path / "m.toml").write_text(
        '[[webhooks]]\nurl = "http://127.0.0.1:9/h"\nsecrets = ["whsec_eHh4eA=="]\nname = "main"\n'
        'tenant = "default"\n\n[[rules]]\nname = "acme"\ntenant = "acme"\n'
        'then = { webhooks = ["main"] }\n'
    )
    with pytest.raises(ConfigError, match="belongs to tenant 'default'"):
        load_config(tmp_path / "m.toml", env={})


def test_dotted_keys_in_toml(tmp_path: Path) -> None:
    """``dmarc.result = "fail"`` in TOML is a nested table; both spellings work."""
    (tmp_path / "m.toml").write_text(
        '[[rules]]\nname = "a"\n'
        'if.all = [{ dmarc.result = "fail" }, { header.X-Priority = "/^1/" }, { "dkim.passed" = false }]\n'
        'then = { queue = "q" }\n'
        '[[rules]]\nname = "b"\n'
        'if = { entities.orderId = true, attachment.extension = "pdf" }\n'
        'then = { queue = "r" }\n'
    )
    rs = load_rules(load_config(tmp_path / "m.toml", env={}))
    assert "dmarc.result = fail" in rs.rules[0].condition.describe()
    assert "header.X-Priority ~ /^1/" in rs.rules[0].condition.describe()
    assert "entities.orderId = true" in rs.rules[1].condition.describe()
