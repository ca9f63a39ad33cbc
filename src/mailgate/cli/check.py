"""``mailgate check-config``: validate a config file without starting anything.

Reports every problem at once (the loader collects them), plus what ``serve`` would trip over
that is not in the file itself: a data dir it cannot create or write. Nothing is created.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from mailgate.cli.common import data_dir_option, data_dir_override, json_option, print_json
from mailgate.config import (
    ENV_DATA_DIR,
    Config,
    ConfigError,
    ConfigErrors,
    config_warnings,
)

# What 0 means for each limit that accepts it (a 0 that silently means "unlimited" surprises).
ZERO_MEANS: dict[str, str] = {
    "smtp.max_connections": "no limit",
    "smtp.max_connections_per_ip": "no limit",
    "smtp.max_messages_per_ip_per_minute": "no limit",
    "smtp.max_connections_per_network": "no limit",
    "smtp.max_data_per_network": "no limit",
    "smtp.reserved_connections": "no slots kept for known clients",
    "smtp.greet_delay": "no pregreet wait",
    "smtp.min_data_rate": "no minimum DATA rate",
    "pipeline.max_attachment_size": "no limit",
    "reply.per_thread_limit": "no limit",
    "reply.per_sender_limit": "no limit",
    "reply.global_hourly_cap": "no limit",
    "ingest.workers": "ingest runs inside the serve process",
    "store.group_commit_window": "each commit is written at once",
    "auth.verify_processes": "DKIM/ARC verified in-process",
}


def limits(cfg: Config) -> dict[str, str]:
    """``key -> value`` for each limit, with what a 0 means spelled out."""
    out: dict[str, str] = {}
    for key, zero in ZERO_MEANS.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name, None)
        if value is None:  # a limit this version does not have
            continue
        out[key] = f"0 ({zero})" if value == 0 else str(value)
    return out


def data_dir_problem(cfg: Config) -> str | None:
    """Why ``serve`` could not create or write ``store.data_dir``, or None (checked, not created)."""
    path = Path(cfg.store.data_dir).absolute()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    where = f"{cfg.source}: store.data_dir = {cfg.store.data_dir!r}"
    if not probe.is_dir():
        return f"{where}: expected a directory that can be created ({probe} is not a directory)"
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "is not writable" if probe == path else "is not writable, so it cannot be created"
        return f"{where}: expected a writable directory ({probe} {what})"
    return None


def rule_count(cfg: Config) -> int:
    """Enabled rules from ``[[rules]]`` and ``pipeline.rules_file`` together."""
    from mailgate.pipeline.rules import load_rules

    return len(load_rules(cfg))


@click.command("check-config")
@click.argument("path", type=click.Path(dir_okay=False), required=False, envvar="MAILGATE_CONFIG")
@data_dir_option
@json_option
def check_config_cmd(path: str | None, as_json: bool) -> None:
    """Validate PATH (default: $MAILGATE_CONFIG, else the built-in defaults).

    Prints a summary and exits 0 when the config is valid; otherwise prints every problem, one
    per line (file:line, key, value and what was expected), and exits 1. Warnings (valid but
    probably unintended settings) are printed either way. ``--json`` prints
    ``{"ok": ..., "errors": [...], "warnings": [...], ...}`` on stdout.
    """
    env = dict(os.environ)
    override = data_dir_override()
    if override:
        env[ENV_DATA_DIR] = override
    cfg: Config | None = None
    errors: list[str] = []
    try:
        from mailgate.app import load_config

        cfg = load_config(path, env=env)
    except ConfigErrors as exc:
        errors = [str(e) for e in exc.errors]
    except ConfigError as exc:
        errors = [str(exc)]
    warnings: list[str] = []
    if cfg is not None:
        problem = data_dir_problem(cfg)
        if problem:
            errors.append(problem)
        warnings = config_warnings(cfg)
    if errors or cfg is None:
        if as_json:
            print_json({"ok": False, "source": path, "errors": errors, "warnings": warnings})
        else:
            for line in errors:
                click.echo(line, err=True)
            for line in warnings:
                click.echo(f"warning: {line}", err=True)
            n = len(errors)
            click.echo(f"{n} error{'s' if n != 1 else ''}: config refused", err=True)
        raise SystemExit(1)
    summary: dict[str, Any] = {
        "ok": True,
        "source": cfg.source,
        "errors": [],
        "warnings": warnings,
        "smtp": cfg.smtp.listen,
        "api": cfg.api.listen if cfg.api.enabled else None,
        "data_dir": cfg.store.data_dir,
        "domains": [d.name for d in cfg.domains],
        "webhooks": len(cfg.webhooks),
        "rules": rule_count(cfg),
        "rules_file": cfg.pipeline.rules_file or None,
        "limits": limits(cfg),
    }
    if as_json:
        print_json(summary)
        return
    click.echo(
        f"{cfg.source}: OK (smtp {summary['smtp']}, api {summary['api'] or 'off'},"
        f" {len(cfg.domains)} domains, {summary['webhooks']} webhooks, {summary['rules']} rules)"
    )
    click.echo(f"  data_dir = {cfg.store.data_dir}")
    for key, value in summary["limits"].items():
        click.echo(f"  {key} = {value}")
    for line in warnings:
        click.echo(f"warning: {line}", err=True)
