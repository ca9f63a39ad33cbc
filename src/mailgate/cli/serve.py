"""``mailgate serve``: run the SMTP listener, the API and the workers until SIGTERM."""

from __future__ import annotations

import dataclasses
import os

import click

from mailgate.cli.common import config_option, load_cli_config
from mailgate.logs import setup_logging
from mailgate.smtp.server import StartupError
from mailgate.store.base import StoreError


@click.command("serve")
@config_option
@click.option("--listen", default=None, help="Override [smtp] listen, e.g. 127.0.0.1:2525.")
@click.option("--api-listen", default=None, help="Override [api] listen, e.g. 127.0.0.1:8025.")
@click.option("--data-dir", default=None, help="Override [store] data_dir.")
def serve_cmd(
    config_path: str | None, listen: str | None, api_listen: str | None, data_dir: str | None
) -> None:
    """Accept mail for the configured domains and process it.

    With no config file, listens on 127.0.0.1:2525 for localhost and example.test, stores
    everything in ./mailgate-data, and serves the API on 127.0.0.1:8025. Logs structured
    lines to stdout; stops cleanly on SIGTERM/SIGINT.
    """
    if data_dir:
        os.environ["MAILGATE_DATA_DIR"] = data_dir
    cfg = load_cli_config(config_path)
    if listen or api_listen:
        from mailgate.config import ConfigError, parse_hostport

        try:
            if listen:
                parse_hostport(listen)
                cfg = dataclasses.replace(cfg, smtp=dataclasses.replace(cfg.smtp, listen=listen))
            if api_listen:
                parse_hostport(api_listen)
                cfg = dataclasses.replace(cfg, api=dataclasses.replace(cfg.api, listen=api_listen))
        except (ValueError, ConfigError) as exc:
            raise click.ClickException(f"--listen: {exc}") from None
    setup_logging(cfg.log.level, cfg.log.format)
    from mailgate.app import run_async, serve

    try:
        run_async(serve(cfg))
    except (StartupError, StoreError) as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass
