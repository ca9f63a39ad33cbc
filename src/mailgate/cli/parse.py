"""``mailgate parse FILE|-``: print the envelope JSON of one message, no server or store needed.

Uses the same ``mime.parse_message``, with the same ``[mime]`` settings, as the ingest worker. ``--attachments-dir`` also writes the
decoded attachments there under their sanitized names (never overwriting an existing file).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import click

from mailgate.cli.common import config_path_option, load_cli_config
from mailgate.mime.parse import configured_parser

_MAX_INPUT = 200 * 1024 * 1024
_MAX_NAME_TRIES = 1000


def _read_input(source: str) -> bytes:
    try:
        if source == "-":
            data = sys.stdin.buffer.read(_MAX_INPUT + 1)
        else:
            with open(source, "rb") as fh:
                data = fh.read(_MAX_INPUT + 1)
    except OSError as exc:
        raise click.ClickException(f"cannot read {source}: {exc.strerror or exc}") from None
    if len(data) > _MAX_INPUT:
        raise click.ClickException(f"{source} is larger than {_MAX_INPUT} bytes")
    return data


def _free_path(directory: Path, filename: str) -> Path:
    """``directory/filename``, or ``name (2).ext`` ... when taken; never outside ``directory``."""
    stem, dot, ext = filename.rpartition(".")
    if not dot or not stem:
        stem, ext = filename, ""
    for n in range(1, _MAX_NAME_TRIES + 1):
        name = filename if n == 1 else (f"{stem} ({n}).{ext}" if ext else f"{stem} ({n})")
        path = directory / name
        if path.resolve().parent != directory.resolve():
            raise click.ClickException(f"refusing to write outside {directory}: {name!r}")
        if not path.exists():
            return path
    raise click.ClickException(f"too many files named like {filename!r} in {directory}")


@click.command("parse")
@click.argument("source", metavar="FILE|-")
@click.option(
    "--attachments-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Also write the decoded attachments into this directory.",
)
@click.option("--pretty", is_flag=True, help="Indent the JSON.")
@config_path_option
def parse_cmd(
    source: str, attachments_dir: Path | None, pretty: bool, config_path: str | None
) -> None:
    """Print the envelope JSON of one RFC 5322 message (FILE, or - for stdin).

    The ``[mime]`` settings of the config (nesting limit, remote images) apply, as in ``serve``.
    """
    mime = load_cli_config(config_path).mime
    parse_message = configured_parser(mime.max_nesting, mime.remote_images)
    raw = _read_input(source)
    blobs: dict[str, bytes] = {}

    def sink(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return digest

    env = parse_message(raw, blob_sink=sink if attachments_dir is not None else None)
    if attachments_dir is not None:
        try:
            attachments_dir.mkdir(parents=True, exist_ok=True)
            for att in env["attachments"]:
                data = blobs.get(att["sha256"])
                if data is None:  # over the size limit: listed, not stored
                    continue
                _free_path(attachments_dir, att["filename"]).write_bytes(data)
        except OSError as exc:
            raise click.ClickException(
                f"cannot write attachments to {attachments_dir}: {exc.strerror or exc}"
            ) from None
    text = json.dumps(env, ensure_ascii=False, indent=2 if pretty else None)
    click.echo(text)
