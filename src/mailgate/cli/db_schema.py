"""``mailgate db status`` and ``mailgate db migrate``: the store's schema version, either backend.

``serve`` migrates on start (``[store] migrate = true``); with ``migrate = false`` (several
nodes upgraded one by one, or a DBA who applies schema changes by hand) it refuses to start on an
older schema, and an operator runs ``db migrate`` once. Every backend refuses a schema newer than
this mailgate knows.
"""

from __future__ import annotations

import click

from mailgate.cli.common import config_option, json_option, load_cli_config, print_json, run
from mailgate.store.ports import SchemaStatus


def _describe(cfg_backend: str, st: SchemaStatus) -> list[str]:
    lines = [f"backend: {cfg_backend}", f"schema: {st.current} (this mailgate knows {st.latest})"]
    if st.newer:
        lines.append("NEWER than this mailgate: upgrade it before serving from this database")
    lines += [f"pending: {name}" for name in st.pending]
    if not st.pending and not st.newer:
        lines.append("up to date")
    return lines


@click.command("status")
@config_option
@json_option
def status_cmd(config_path: str | None, as_json: bool) -> None:
    """Applied and pending schema migrations (exit 1 when not up to date)."""
    from mailgate.app import build_store

    cfg = load_cli_config(config_path)
    st = run(build_store(cfg).schema_status)
    if as_json:
        print_json(
            {
                "backend": cfg.store.backend,
                "current": st.current,
                "latest": st.latest,
                "applied": st.applied,
                "pending": st.pending,
                "newer": st.newer,
            }
        )
    else:
        for line in _describe(cfg.store.backend, st):
            click.echo(line)
    if st.pending or st.newer:
        raise SystemExit(1)


@click.command("migrate")
@config_option
def migrate_cmd(config_path: str | None) -> None:
    """Apply the missing schema migrations (safe while other nodes run: one migrates at a time)."""
    from mailgate.app import build_store

    cfg = load_cli_config(config_path)
    applied = run(build_store(cfg).migrate)
    for name in applied:
        click.echo(f"applied {name}")
    click.echo("up to date" if applied else "nothing to do: up to date")
