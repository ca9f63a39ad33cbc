"""Config loading and validation: defaults, overrides, and bad config refused with key, value, line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailgate.cli import main
from mailgate.config import (
    ConfigError,
    ConfigErrors,
    load_config,
    parse_duration,
    parse_size,
    section_names,
)

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "mailgate.toml"
    p.write_text(text)
    return p


def test_defaults_work_without_a_file() -> None:
    cfg = load_config(None, env={})
    assert cfg.smtp.listen == "127.0.0.1:2525"
    assert cfg.store.data_dir == "./mailgate-data"
    assert {d.name for d in cfg.domains} == {"localhost", "example.test"}
    assert cfg.auth.dmarc_enforce == "tag"


def test_env_overrides(tmp_path: Path) -> None:
    p = write(tmp_path, '[smtp]\nlisten = "127.0.0.1:2600"\n')
    cfg = load_config(None, env={"MAILGATE_CONFIG": str(p), "MAILGATE_DATA_DIR": "/srv/mg"})
    assert cfg.smtp.port == 2600
    assert cfg.store.data_dir == "/srv/mg"


def test_sizes_and_durations() -> None:
    assert parse_size("25MB") == 25 * 1024 * 1024
    assert parse_size("512k") == 512 * 1024
    assert parse_size(1000) == 1000
    assert parse_duration("250ms") == 0.25
    assert parse_duration("5m") == 300
    with pytest.raises(ValueError):
        parse_size("lots")
    with pytest.raises(ValueError):
        parse_duration("soon")


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        (
            '[smtp]\nlisten = "127.0.0.1:2525"\nmax_recipients = "ten"\n',
            r"mailgate\.toml:3: smtp\.max_recipients = 'ten': expected an integer",
        ),
        ('[smtp]\nlisten = "nowhere"\n', r":2: smtp\.listen = 'nowhere': expected an address"),
        ('[smtp]\nlisten = "mail.example.com:25"\n', r"smtp\.listen .*expected an IP address"),
        ('[smtp]\nlistne = "127.0.0.1:25"\n', r":2: unknown key 'smtp\.listne': expected one of"),
        (
            '[smtp]\ntls_cert = "/nonexistent/cert.pem"\ntls_key = "/nonexistent/key.pem"\n',
            r":2: smtp\.tls_cert = '/nonexistent/cert\.pem': expected a path to an existing",
        ),
        (
            '[smtp]\nmax_message_size = "huge"\n',
            r"smtp\.max_message_size = 'huge': expected a size",
        ),
        (
            '[auth]\ndmarc_enforce = "bounce"\n',
            r"auth\.dmarc_enforce = 'bounce': expected one of 'tag', 'quarantine', 'reject'",
        ),
        (
            '[auth]\nnameservers = ["dns.example"]\n',
            r"auth\.nameservers\[0\] = 'dns\.example': expected an IP",
        ),
        (
            '[[domains]]\nname = "bad domain"\ncatch_all = true\n',
            r"domains\[0\]\.name = 'bad domain'",
        ),
        ('[[domains]]\nname = "example.com"\n', r"domains\[0\]\.mailboxes.*catch_all = true"),
        ('[[webhooks]]\nurl = "http://127.0.0.1:9/x"\n', r"webhooks\[0\]\.secrets.*signing secret"),
        ('[store]\ndurability = "maybe"\n', r"store\.durability = 'maybe'"),
        (
            "[ingest]\nworker_nice = 25\n",
            r"ingest\.worker_nice = 25: expected 0 \(as the listener\) to 19",
        ),
        ("smtp = 3\n", r"smtp = 3: expected a table"),
        ("[smtp\n", r"invalid TOML"),
    ],
)
def test_bad_config_is_refused_with_key_value_and_expectation(
    tmp_path: Path, text: str, pattern: str
) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError, match=pattern):
        load_config(p, env={})


def test_a_removed_key_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    p = write(tmp_path, '[smtp]\nlisten = "127.0.0.1:2525"\nchunked_data = false\n')
    with caplog.at_level("WARNING", logger="mailgate.config"):
        cfg = load_config(p, env={})
    assert cfg.smtp.listen == "127.0.0.1:2525"
    assert any("smtp.chunked_data" in r.getMessage() for r in caplog.records), caplog.records


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("/nonexistent/mailgate.toml", env={})


def test_check_config_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    example = _example_with_generated_secrets(tmp_path)
    good = runner.invoke(main, ["check-config", str(example), "--json"])
    assert good.exit_code == 0, good.output
    assert '"ok": true' in good.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[smtp]\nmax_recipients = -1\n")
    result = runner.invoke(main, ["check-config", str(bad)])
    assert result.exit_code == 1
    assert "smtp.max_recipients = -1" in result.output
    assert "Traceback" not in result.output


def _check(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["check-config", *args])
    return result.exit_code, result.stdout, result.stderr


def test_check_config_reports_every_error_at_once(tmp_path: Path) -> None:
    bad = write(
        tmp_path,
        '[smtp]\nmax_recipients = "ten"\nlistne = 1\nidle_timeout = "soon"\n'
        '[[domains]]\nname = "example.com"\ncatch_all = "yes"\n',
    )
    code, out, err = _check(str(bad))
    assert code == 1
    assert out == ""
    lines = err.strip().splitlines()
    assert "smtp.max_recipients = 'ten'" in lines[0]
    assert "unknown key 'smtp.listne'" in lines[1]
    assert "smtp.idle_timeout = 'soon'" in lines[2]
    assert "domains[0].catch_all = 'yes': expected true or false" in lines[3]
    assert lines[4] == "4 errors: config refused"

    code, out, _ = _check(str(bad), "--json")
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False and report["warnings"] == []
    assert report["errors"] == [line for line in lines[:4]]
    assert len(report["errors"]) == 4


def test_check_config_json_lists_validation_errors(tmp_path: Path) -> None:
    bad = write(
        tmp_path,
        '[smtp]\nlisten = "127.0.0.1:2525"\n[api]\nlisten = "0.0.0.0:2525"\n'
        '[[api.tokens]]\ntoken = "too-short"\n',
    )
    code, out, _ = _check(str(bad), "--json")
    assert code == 1
    errors = json.loads(out)["errors"]
    assert len(errors) == 2
    assert "api.listen = '0.0.0.0:2525': expected an address other than smtp.listen" in errors[0]
    assert "api.tokens[0].token = '<9 characters>'" in errors[1]


@pytest.mark.parametrize(
    ("smtp", "api", "clash"),
    [
        ("127.0.0.1:2525", "127.0.0.1:2525", True),
        ("0.0.0.0:2525", "127.0.0.1:2525", True),
        ("127.0.0.1:2525", "127.0.0.1:8025", False),
        ("127.0.0.1:0", "127.0.0.1:0", False),  # port 0: the kernel picks two ports
    ],
)
def test_smtp_and_api_listeners_must_differ(
    tmp_path: Path, smtp: str, api: str, clash: bool
) -> None:
    p = write(tmp_path, f'[smtp]\nlisten = "{smtp}"\n[api]\nlisten = "{api}"\n')
    if clash:
        with pytest.raises(ConfigError, match=r":4: api\.listen = .*other than smtp\.listen"):
            load_config(p, env={})
    else:
        assert load_config(p, env={}).api.listen == api
    disabled = write(
        tmp_path, f'[smtp]\nlisten = "{smtp}"\n[api]\nenabled = false\nlisten = "{api}"\n'
    )
    assert not load_config(disabled, env={}).api.enabled


def test_check_config_refuses_a_data_dir_it_cannot_create(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, out, _ = _check("--data-dir", str(blocker / "data"), "--json")
    assert code == 1
    (error,) = json.loads(out)["errors"]
    assert f"store.data_dir = '{blocker / 'data'}': expected a directory" in error
    fresh = tmp_path / "new" / "data"
    code, out, _ = _check("--data-dir", str(fresh), "--json")
    assert code == 0, out
    assert json.loads(out)["data_dir"] == str(fresh)
    assert not (tmp_path / "new").exists()  # checked, not created


def test_check_config_says_what_zero_means_and_counts_rules_file_rules(tmp_path: Path) -> None:
    (tmp_path / "rules.toml").write_text(
        '[[rules]]\nname = "a"\nthen = { queue = "a" }\n'
        '[[rules]]\nname = "b"\nthen = { queue = "b" }\n'
    )
    p = write(
        tmp_path,
        f'[store]\ndata_dir = "{tmp_path / "d"}"\n'
        "[smtp]\nmax_connections_per_ip = 0\nmax_connections = 700\n"
        '[pipeline]\nrules_file = "rules.toml"\n'
        '[[rules]]\nname = "inline"\nthen = { queue = "c" }\n',
    )
    code, out, err = _check(str(p))
    assert code == 0, err
    assert "3 rules" in out.splitlines()[0]
    assert "  smtp.max_connections_per_ip = 0 (no limit)" in out.splitlines()
    assert "  smtp.max_connections = 700" in out.splitlines()
    report = json.loads(_check(str(p), "--json")[1])
    assert report["rules"] == 3 and report["rules_file"] == "rules.toml"
    assert report["limits"]["smtp.max_connections_per_ip"] == "0 (no limit)"
    assert report["limits"]["ingest.workers"] == "2"


def test_check_config_prints_config_warnings(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        f'[store]\ndata_dir = "{tmp_path / "d"}"\n'
        '[[domains]]\nname = "example.test"\ncatch_all = true\n'
        '[[domains]]\nname = "acme.example"\ncatch_all = true\ntenant = "acme"\n'
        '[reply]\nenabled = true\nfrom = "support@example.test"\n',
    )
    code, out, err = _check(str(p))
    assert code == 0, out
    assert err.startswith("warning: reply.tenant_from: no reply From for tenant(s) acme")
    report = json.loads(_check(str(p), "--json")[1])
    assert report["ok"] is True
    assert report["warnings"] and report["warnings"][0].startswith("reply.tenant_from")


def test_serve_refuses_bad_config(tmp_path: Path) -> None:
    bad = write(tmp_path, '[smtp]\nmax_recipients = "x"\n')
    result = CliRunner().invoke(main, ["serve", "--config", str(bad)])
    assert result.exit_code == 1
    assert "smtp.max_recipients" in result.output


def _documented_keys(text: str) -> set[str]:
    keys = set(re.findall(r"^\s*#?\s*([a-z0-9_]+)\s*=", text, flags=re.MULTILINE))
    keys |= set(re.findall(r"`([a-z0-9_]+)`", text))
    keys |= {
        t.split(".")[-1] for t in re.findall(r"^\[\[?([a-z0-9_.]+)\]\]?", text, flags=re.MULTILINE)
    }
    return keys


def test_every_config_key_is_documented() -> None:
    """Each key appears in config.example.toml and in the README's reference (Datasette's test_docs)."""
    example = (ROOT / "config.example.toml").read_text()
    readme = (ROOT / "README.md").read_text()
    example_keys = _documented_keys(example) | set(re.findall(r"\{ ?([a-z_]+) =", example))
    missing_example, missing_readme = [], []
    for section, keys in section_names().items():
        for key in keys:
            if key not in example_keys:
                missing_example.append(f"{section}.{key}")
            if f"`{key}`" not in readme:
                missing_readme.append(f"{section}.{key}")
    assert not missing_example, f"not in config.example.toml: {missing_example}"
    assert not missing_readme, f"not in README.md: {missing_readme}"


def test_example_config_is_refused_for_exactly_its_placeholders() -> None:
    """The example ships no usable secret: only its two placeholders stop it from loading."""
    with pytest.raises(ConfigErrors) as info:
        load_config(ROOT / "config.example.toml", env={})
    messages = [str(e) for e in info.value.errors]
    placeholder_keys = (": api.tokens[0].token = ", ": webhooks[0].secrets[0] = ")
    assert all(any(k in m for k in placeholder_keys) for m in messages), messages
    assert any("api.tokens[0].token = 'change-me'" in m and "keys new-token" in m for m in messages)
    assert any(
        "webhooks[0].secrets[0] = 'whsec_change-me'" in m and "keys new-webhook-secret" in m
        for m in messages
    )


def _example_with_generated_secrets(tmp_path: Path) -> Path:
    runner = CliRunner()
    token = json.loads(runner.invoke(main, ["keys", "new-token", "--json"]).output)["token"]
    secret = json.loads(runner.invoke(main, ["keys", "new-webhook-secret", "--json"]).output)
    text = (ROOT / "config.example.toml").read_text()
    assert text.count('"change-me"') == 1 and text.count('"whsec_change-me"') == 1
    text = text.replace('"change-me"', json.dumps(token))
    text = text.replace('"whsec_change-me"', json.dumps(secret["secret"]))
    return write(tmp_path, text)


def test_example_config_is_valid_with_generated_secrets(tmp_path: Path) -> None:
    path = _example_with_generated_secrets(tmp_path)
    cfg = load_config(path, env={})
    assert cfg.webhooks and cfg.webhooks[0].secrets[0].startswith("whsec_")
    assert len(cfg.api.tokens[0].token) >= 32


@pytest.mark.parametrize(
    ("token", "pattern"),
    [
        (
            "change-me",
            r"api\.tokens\[0\]\.token = 'change-me': expected a real token.*keys new-token",
        ),
        ("CHANGE-ME", r"not a placeholder"),
        ("short-but-real-token", r"= '<20 characters>': expected at least 32 characters"),
    ],
)
def test_placeholder_or_short_tokens_are_refused(tmp_path: Path, token: str, pattern: str) -> None:
    p = write(tmp_path, f'[[api.tokens]]\ntoken = "{token}"\n')
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(p, env={})
    if token == "short-but-real-token":
        assert token not in str(info.value)  # a real secret is never echoed


def test_placeholder_webhook_secret_is_refused(tmp_path: Path) -> None:
    p = write(
        tmp_path, '[[webhooks]]\nurl = "http://127.0.0.1:9/h"\nsecrets = ["whsec_change-me"]\n'
    )
    with pytest.raises(ConfigError, match=r"webhooks\[0\]\.secrets\[0\].*new-webhook-secret"):
        load_config(p, env={})


def test_serve_refuses_the_placeholder_token(tmp_path: Path) -> None:
    p = write(
        tmp_path, f'[store]\ndata_dir = "{tmp_path / "d"}"\n[[api.tokens]]\ntoken = "change-me"\n'
    )
    result = CliRunner().invoke(main, ["serve", "--config", str(p)])
    assert result.exit_code == 1
    assert "mailgate keys new-token" in result.output
    assert not (tmp_path / "d").exists()


def test_readme_reference_is_generated_from_the_example() -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "config_reference.py"), "--check"],
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout.decode()
