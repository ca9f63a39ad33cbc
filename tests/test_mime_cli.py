"""``mailgate parse``: JSON on stdout, attachments written, one-line user errors."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from mailgate.cli.parse import parse_cmd
from tests.support.mime import FIXTURES, assert_valid_envelope


def test_parse_file_prints_envelope() -> None:
    result = CliRunner().invoke(parse_cmd, [str(FIXTURES / "nested.eml")])
    assert result.exit_code == 0, result.output
    env = json.loads(result.output)
    assert_valid_envelope(env)
    assert env["subject"] == "nested structure"
    assert "\n  " not in result.output.strip()  # compact unless --pretty


def test_parse_stdin_pretty() -> None:
    raw = (FIXTURES / "encoded_words.eml").read_bytes()
    result = CliRunner().invoke(parse_cmd, ["-", "--pretty"], input=raw)
    assert result.exit_code == 0, result.output
    assert '\n  "subject": "Grüße aus Köln日本語の件名です"' in result.output  # not \u-escaped


def test_attachments_dir(tmp_path: Path) -> None:
    out = tmp_path / "atts"
    (out).mkdir()
    (out / "invoice.pdf").write_bytes(b"existing")  # never overwritten
    args = [str(FIXTURES / "nested.eml"), "--attachments-dir", str(out)]
    result = CliRunner().invoke(parse_cmd, args)
    assert result.exit_code == 0, result.output
    assert (out / "invoice.pdf").read_bytes() == b"existing"
    assert (out / "invoice (2).pdf").read_bytes() == b"%PDF-1.7\n1 0 obj\n"
    assert (out / "attachment-1.png").read_bytes().startswith(b"\x89PNG")


def test_missing_file_is_a_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(parse_cmd, [str(tmp_path / "nope.eml")])
    assert result.exit_code != 0
    assert result.output.strip().count("\n") == 0
    assert "cannot read" in result.output
    assert "Traceback" not in result.output


def test_unwritable_attachments_dir_is_a_user_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    args = [str(FIXTURES / "nested.eml"), "--attachments-dir", str(blocker / "sub")]
    result = CliRunner().invoke(parse_cmd, args)
    assert result.exit_code != 0
    assert "Traceback" not in result.output
