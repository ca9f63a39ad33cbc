"""Config validation is explicit: what is checked does not depend on what was imported (issue 13).

Each subsystem exposes ``validate(cfg, where)``; ``mailgate.app.load_config`` (used by serve,
check-config, the worker and every CLI command) runs them all and reports every error.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BAD = """
[[domains]]
name = "example.test"
catch_all = true

[pipeline]
stages = ["dedup", "thread", "scan", "nosuchstage", "quarantine"]

[delivery]
jitter = 1.5
"""


def _run(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "mailgate.toml"
    cfg.write_text(BAD)
    return subprocess.run(
        [sys.executable, "-c", code, str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_app_load_config_refuses_unknown_stage_in_a_fresh_interpreter(tmp_path: Path) -> None:
    """Nothing but mailgate.app imported: the stage and the delivery check both run, and both
    errors are reported at once."""
    out = _run(
        "import sys\n"
        "from mailgate.app import load_config\n"
        "from mailgate.config import ConfigErrors\n"
        "try:\n"
        "    load_config(sys.argv[1], env={})\n"
        "except ConfigErrors as exc:\n"
        "    print('\\n'.join(str(e) for e in exc.errors))\n"
        "else:\n"
        "    print('ACCEPTED')\n",
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "ACCEPTED" not in out.stdout
    assert "nosuchstage" in out.stdout
    assert "delivery.jitter" in out.stdout


def test_core_load_config_does_not_depend_on_imports(tmp_path: Path) -> None:
    """``mailgate.config.load_config`` checks only what it owns, whether or not subsystem modules
    were imported before (no registration by import side effect)."""
    code = (
        "import sys\n"
        "{imports}"
        "from mailgate.config import load_config\n"
        "cfg = load_config(sys.argv[1], env={{}})\n"
        "print(cfg.pipeline.stages[3])\n"
    )
    plain = _run(code.format(imports=""), tmp_path)
    loaded = _run(
        code.format(imports="import mailgate.pipeline.runner, mailgate.delivery.webhook\n"),
        tmp_path,
    )
    assert plain.returncode == 0, plain.stderr
    assert (plain.stdout, plain.returncode) == (loaded.stdout, loaded.returncode)
    assert plain.stdout.strip() == "nosuchstage"


def test_check_config_reports_subsystem_errors(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mailgate.cli import main

    cfg = tmp_path / "mailgate.toml"
    cfg.write_text(BAD)
    result = CliRunner().invoke(main, ["check-config", str(cfg)])
    assert result.exit_code == 1
    assert "nosuchstage" in result.output
    assert "delivery.jitter" in result.output


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[store]\nbackend = "postgresql"\n', "store.dsn"),
        ('[store]\nbackend = "postgresql"\ndsn = "postgresql://mg@h/db"\n', "api.tokens"),
        ('[store]\ndsn = "mysql://x"\n', "store.dsn"),
        ('[store]\nlease = "1s"\n', "store.lease"),
        ('[store]\nnode = "a b"\n', "store.node"),
    ],
)
def test_store_keys_are_checked(tmp_path: Path, toml: str, key: str) -> None:
    from mailgate.app import load_config
    from mailgate.config import ConfigError

    cfg = tmp_path / "mailgate.toml"
    cfg.write_text('[[domains]]\nname = "example.test"\ncatch_all = true\n' + toml)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(cfg, env={})


def test_store_dsn_from_environment(tmp_path: Path) -> None:
    from mailgate.app import load_config

    cfg = tmp_path / "mailgate.toml"
    cfg.write_text(
        '[[domains]]\nname = "example.test"\ncatch_all = true\n[store]\nbackend = "postgresql"\n'
        '[[api.tokens]]\nname = "t"\ntoken = "0123456789abcdef0123456789abcdef-test"\n'
    )
    loaded = load_config(cfg, env={"MAILGATE_STORE_DSN": "postgresql://mg@127.0.0.1:1/mg"})
    assert loaded.store.dsn == "postgresql://mg@127.0.0.1:1/mg"


PG_WITH_TOKEN = (
    '[[domains]]\nname = "example.test"\ncatch_all = true\n[store]\nbackend = "postgresql"\n'
    'dsn = "postgresql://mg@127.0.0.1:1/mg"\n'
    '[[api.tokens]]\nname = "t"\ntoken = "0123456789abcdef0123456789abcdef-test"\n'
)


def test_an_encryption_key_with_postgresql_is_refused_not_ignored(tmp_path: Path) -> None:
    """The PostgreSQL store does not seal data: a configured key must not promise it does."""
    from mailgate.app import load_config
    from mailgate.config import ConfigError

    key = tmp_path / "kek"
    key.write_text("A" * 43 + "=\n")
    cfg = tmp_path / "mailgate.toml"
    cfg.write_text(PG_WITH_TOKEN.replace("[store]\n", f'[store]\nencryption_key_file = "{key}"\n'))
    with pytest.raises(ConfigError, match=r"store\.encryption_key_file.*SQLite store only"):
        load_config(cfg, env={})
    plain = tmp_path / "plain.toml"
    plain.write_text(PG_WITH_TOKEN)
    assert load_config(plain, env={}).store.backend == "postgresql"
    with pytest.raises(ConfigError, match=r"MAILGATE_ENCRYPTION_KEY is set"):
        load_config(plain, env={"MAILGATE_ENCRYPTION_KEY": "A" * 43 + "="})
