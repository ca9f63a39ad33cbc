"""The CLI finds the server's store from anywhere, never creates one, and one serve owns a dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from mailgate.cli import main
from tests.support.server import MailgateServer

RAW = "From: a@example.org\r\nTo: support@example.test\r\nSubject: where\r\n\r\nbody\r\n"


def _cli(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """A real ``mailgate`` process started in ``cwd`` (used where a subprocess matters)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "mailgate.cli", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _run(cwd: Path, monkeypatch: pytest.MonkeyPatch, *args: str, **env: str) -> Result:
    """The CLI in-process, from ``cwd``, with only the given MAILGATE_* variables set."""
    monkeypatch.chdir(cwd)
    environ: dict[str, str | None] = {"MAILGATE_CONFIG": None, "MAILGATE_DATA_DIR": None}
    environ.update(env)
    return CliRunner().invoke(main, list(args), env=environ)


def test_cli_from_an_unrelated_directory_finds_the_store(
    mailgate_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = mailgate_server()
    msg_id = srv.send(RAW).rsplit(" ", 1)[-1]
    srv.wait_processed(1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    by_option = _cli(elsewhere, "messages", "list", "--data-dir", str(srv.data_dir))
    assert by_option.returncode == 0, by_option.stderr
    assert msg_id in by_option.stdout

    by_env = _run(
        elsewhere, monkeypatch, "messages", "show", msg_id, MAILGATE_DATA_DIR=str(srv.data_dir)
    )
    assert by_env.exit_code == 0, by_env.output
    assert msg_id in by_env.stdout

    by_config = _run(elsewhere, monkeypatch, "dlq", "list", "-c", str(srv.config_path))
    assert by_config.exit_code == 0, by_config.output
    by_config_env = _run(
        elsewhere, monkeypatch, "quarantine", "list", MAILGATE_CONFIG=str(srv.config_path)
    )
    assert by_config_env.exit_code == 0, by_config_env.output
    assert list(elsewhere.iterdir()) == []  # nothing created in the cwd


def test_a_dir_without_a_store_is_refused_and_left_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for args in (
        ("messages", "list", "--data-dir", str(empty)),
        ("messages", "show", "msg_x", "--data-dir", str(empty)),
        ("quarantine", "list", "--data-dir", str(empty)),
        ("dlq", "list", "--data-dir", str(empty)),
        ("outbox", "list", "--data-dir", str(empty)),
        ("banner", "set", "hello", "--data-dir", str(empty)),
        ("replay", "--data-dir", str(empty)),
        ("audit", "list", "--data-dir", str(empty)),
    ):
        result = _run(tmp_path, monkeypatch, *args)
        assert result.exit_code == 1, (args, result.output)
        assert f"no mailgate store at {empty} (use --config or --data-dir)" in result.stderr, args
        assert result.exception is None or isinstance(result.exception, SystemExit)
    # the default ./mailgate-data of an unrelated cwd is not created either (a real process)
    result = _cli(empty, "messages", "list")
    assert result.returncode == 1
    assert f"no mailgate store at {empty / 'mailgate-data'}" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(empty.iterdir()) == []
    missing = tmp_path / "missing"
    result = _run(tmp_path, monkeypatch, "messages", "list", MAILGATE_DATA_DIR=str(missing))
    assert result.exit_code == 1 and "no mailgate store at" in result.stderr
    assert not missing.exists()


def test_a_second_serve_on_the_same_data_dir_refuses_to_start(mailgate_server: Any) -> None:
    srv = mailgate_server()
    same_config = subprocess.run(
        [sys.executable, "-m", "mailgate.cli", "serve", "--config", str(srv.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert same_config.returncode == 1
    assert f"in use by pid {srv.proc.pid}" in same_config.stderr, same_config.stderr
    assert len(same_config.stderr.strip().splitlines()) == 1
    # another config (other ports) on the same dir through --data-dir: refused the same way
    other_dir = srv.dir / "other"
    other_dir.mkdir()
    by_data_dir = _cli(
        other_dir,
        "serve",
        "--data-dir",
        str(srv.data_dir),
        "--listen",
        "127.0.0.1:0",
        "--api-listen",
        "127.0.0.1:0",
    )
    assert by_data_dir.returncode == 1
    assert f"in use by pid {srv.proc.pid}" in by_data_dir.stderr, by_data_dir.stderr
    # the running server is untouched: its runfile is there and it still accepts mail
    assert (srv.data_dir / "serve.json").exists()
    srv.send(RAW)


def test_clean_exit_removes_the_runfile_and_frees_the_dir(tmp_path: Path) -> None:
    srv = MailgateServer(tmp_path)
    srv.start()
    assert (srv.data_dir / "serve.json").exists()
    assert srv.stop() == 0
    assert not (srv.data_dir / "serve.json").exists()
    assert (srv.data_dir / "serve.lock").read_text() == ""  # no stale pid
    srv.start()  # the dir is free again
    assert (srv.data_dir / "serve.lock").read_text().strip() == str(srv.proc.pid)
    srv.stop()
