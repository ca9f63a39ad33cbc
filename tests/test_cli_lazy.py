"""The CLI names its commands without importing them; each loads and helps on its own."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from mailgate.cli import COMMANDS, load_command, main


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_listed_command_loads_under_its_name_and_has_help(name: str) -> None:
    command = load_command(name)
    assert command.name == name
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output


def test_top_level_help_lists_every_command() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert f"  {name} " in result.output


def test_db_group_carries_the_schema_commands() -> None:
    result = CliRunner().invoke(main, ["db", "--help"])
    assert result.exit_code == 0
    for sub in ("check", "migrate", "status"):
        assert f"  {sub} " in result.output


def test_importing_the_cli_does_not_import_the_commands() -> None:
    code = (
        "import sys, mailgate.cli; "
        "heavy = [m for m in ('numpy', 'aiohttp', 'mailgate.pipeline.runner', 'mailgate.cli.serve')"
        " if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == ""


def test_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["no-such-command"])
    assert result.exit_code == 2
    assert "No such command" in result.output
