"""``mailgate check-config``: validate a config file without starting anything."""

from __future__ import annotations

import click

from mailgate.cli.common import json_option, load_cli_config, print_json


@click.command("check-config")
@click.argument("path", type=click.Path(dir_okay=False), required=False, envvar="MAILGATE_CONFIG")
@json_option
def check_config_cmd(path: str | None, as_json: bool) -> None:
    """Validate PATH (default: $MAILGATE_CONFIG, else the built-in defaults).

    Exits 0 and prints a summary when the config is valid; otherwise prints the file, line,
    key, value and what was expected, and exits 1.
    """
    cfg = load_cli_config(path)
    summary = {
        "ok": True,
        "source": cfg.source,
        "smtp": cfg.smtp.listen,
        "api": cfg.api.listen if cfg.api.enabled else None,
        "data_dir": cfg.store.data_dir,
        "domains": [d.name for d in cfg.domains],
        "webhooks": len(cfg.webhooks),
        "rules": len(cfg.rules) if isinstance(cfg.rules, list) else 0,
    }
    if as_json:
        print_json(summary)
    else:
        click.echo(
            f"{cfg.source}: OK (smtp {summary['smtp']}, {len(cfg.domains)} domains,"
            f" {summary['webhooks']} webhooks, {summary['rules']} rules)"
        )
