"""`mailgate parse` and the offline pipeline (`rules test`) apply the config's ``[mime]``."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from mailgate.cli import main
from mailgate.config import load_config
from mailgate.pipeline.offline import envelope_from_bytes

HTML_MAIL = (
    b"From: a@example.test\r\nTo: help@example.test\r\nSubject: pic\r\n"
    b"Message-ID: <pic@example.test>\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n\r\n"
    b'<p>see <img src="https://tracker.example.net/p.gif?u=42"> here</p>\r\n'
)


def nested(depth: int) -> bytes:
    """A message whose text part sits `depth` multiparts down."""
    head = (
        b"From: a@example.test\r\nTo: help@example.test\r\nSubject: deep\r\nMIME-Version: 1.0\r\n"
    )
    body = b"Content-Type: text/plain\r\n\r\ninnermost words\r\n"
    for level in range(depth):
        b = f"b{level}".encode()
        body = (
            b"Content-Type: multipart/mixed; boundary="
            + b
            + b"\r\n\r\n--"
            + b
            + b"\r\n"
            + body
            + b"\r\n--"
            + b
            + b"--\r\n"
        )
    return head + body


def write_config(tmp_path: Path, mime: str) -> Path:
    path = tmp_path / "mailgate.toml"
    path.write_text(
        '[[domains]]\nname = "example.test"\nmailboxes = ["help"]\n'
        f'[store]\ndata_dir = "{tmp_path / "d"}"\n[mime]\n{mime}\n'
    )
    return path


def run_parse(tmp_path: Path, raw: bytes, *args: str) -> dict[str, object]:
    src = tmp_path / "in.eml"
    src.write_bytes(raw)
    result = CliRunner().invoke(main, ["parse", str(src), *args], env={"MAILGATE_CONFIG": ""})
    assert result.exit_code == 0, result.output
    out: dict[str, object] = json.loads(result.output)
    return out


def test_parse_strips_remote_images_when_the_config_says_so(tmp_path: Path) -> None:
    plain = run_parse(tmp_path, HTML_MAIL)
    assert "tracker.example.net" in str(plain["html"])
    cfg = write_config(tmp_path, 'remote_images = "strip"')
    stripped = run_parse(tmp_path, HTML_MAIL, "--config", str(cfg))
    assert "tracker.example.net" not in str(stripped["html"])
    assert "here" in str(stripped["html"])


def test_parse_applies_the_configured_nesting_limit(tmp_path: Path) -> None:
    raw = nested(6)
    default = run_parse(tmp_path, raw)
    assert "innermost words" in str(default["text"])
    cfg = write_config(tmp_path, "max_nesting = 3")
    limited = run_parse(tmp_path, raw, "-c", str(cfg))
    assert "innermost words" not in str(limited["text"])
    assert any("limit" in str(err) for err in limited["parseErrors"])  # type: ignore[attr-defined]


def test_offline_envelope_uses_the_mime_section(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, 'remote_images = "strip"\nmax_nesting = 3'))
    env, _ports = envelope_from_bytes(HTML_MAIL, cfg)
    assert "tracker.example.net" not in str(env["html"])
    deep, _ports = envelope_from_bytes(nested(6), cfg)
    assert "innermost words" not in str(deep.get("text"))
