"""``mailgate db status|migrate`` on both backends; a schema newer than mailgate is refused."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailgate.cli import main
from tests.support.postgres import PgCluster


def _config(tmp_path: Path, backend: str) -> Path:
    cfg = tmp_path / "mailgate.toml"
    cfg.write_text(
        '[[domains]]\nname = "example.test"\ncatch_all = true\n'
        f'[store]\nbackend = "{backend}"\ndata_dir = "{tmp_path / "data"}"\n'
        '[[api.tokens]]\nname = "ops"\ntoken = "test-token-0123456789abcdef0123456789"\n'
    )
    return cfg


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_env(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    env: dict[str, str] = {}
    if request.param == "postgresql":
        cluster: PgCluster = request.getfixturevalue("pg_cluster")
        env["MAILGATE_STORE_DSN"] = cluster.create_database()
    return _config(tmp_path, request.param), env


def _status(cfg: Path, env: dict[str, str]) -> tuple[int, dict[str, object]]:
    out = CliRunner().invoke(main, ["db", "status", "--json", "-c", str(cfg)], env=env)
    return out.exit_code, json.loads(out.output)


def test_status_then_migrate_then_up_to_date(backend_env: tuple[Path, dict[str, str]]) -> None:
    cfg, env = backend_env
    code, before = _status(cfg, env)
    assert code == 1
    assert before["current"] == 0
    assert before["pending"]
    migrated = CliRunner().invoke(main, ["db", "migrate", "-c", str(cfg)], env=env)
    assert migrated.exit_code == 0, migrated.output
    assert "applied 001_" in migrated.output
    code, after = _status(cfg, env)
    assert code == 0
    assert after["pending"] == []
    assert after["current"] == after["latest"]
    again = CliRunner().invoke(main, ["db", "migrate", "-c", str(cfg)], env=env)
    assert "nothing to do" in again.output


def test_a_newer_schema_is_refused(
    backend_env: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    cfg, env = backend_env
    assert CliRunner().invoke(main, ["db", "migrate", "-c", str(cfg)], env=env).exit_code == 0
    if "MAILGATE_STORE_DSN" in env:
        subprocess.run(
            [
                "/usr/lib/postgresql/15/bin/psql",
                env["MAILGATE_STORE_DSN"],
                "-c",
                "INSERT INTO schema_version VALUES (999, '999_future.sql', 0)",
            ],
            check=True,
            capture_output=True,
        )
    else:
        with sqlite3.connect(tmp_path / "data" / "mailgate.sqlite") as conn:
            conn.execute("INSERT INTO schema_version VALUES (999, '999_future.sql', 0)")
    code, st = _status(cfg, env)
    assert code == 1
    assert st["newer"] is True
    refused = CliRunner().invoke(main, ["db", "migrate", "-c", str(cfg)], env=env)
    assert refused.exit_code == 1
    assert "newer than this mailgate" in refused.output
    # serve refuses too: opening the store is where it starts
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import asyncio, sys\n"
            "from mailgate.app import build_store, load_config\n"
            "store = build_store(load_config(sys.argv[1]))\n"
            "asyncio.run(store.open())\n",
            str(cfg),
        ],
        capture_output=True,
        text=True,
        env={**env, "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    assert probe.returncode != 0
    assert "newer than this mailgate" in probe.stderr


def test_migrate_false_refuses_an_older_schema_until_db_migrate(
    backend_env: tuple[Path, dict[str, str]],
) -> None:
    cfg, env = backend_env
    cfg.write_text(cfg.read_text().replace("[store]\n", "[store]\nmigrate = false\n"))
    probe = [
        sys.executable,
        "-c",
        "import asyncio, sys\n"
        "from mailgate.app import build_store, load_config\n"
        "async def main():\n"
        "    store = build_store(load_config(sys.argv[1]))\n"
        "    await store.open()\n"
        "    await store.close()\n"
        "asyncio.run(main())\n",
        str(cfg),
    ]
    run_env = {**env, "PATH": "/usr/bin:/bin"}
    refused = subprocess.run(probe, capture_output=True, text=True, env=run_env, timeout=60)
    assert refused.returncode != 0
    assert "mailgate db migrate" in refused.stderr
    assert CliRunner().invoke(main, ["db", "migrate", "-c", str(cfg)], env=env).exit_code == 0
    opened = subprocess.run(probe, capture_output=True, text=True, env=run_env, timeout=60)
    assert opened.returncode == 0, opened.stderr
