"""``mailgate serve``: run the SMTP listener, the API and the workers until SIGTERM."""

from __future__ import annotations

import dataclasses
import os

import click

from mailgate.cli.common import config_option, data_dir_override, load_cli_config
from mailgate.config import ENV_DATA_DIR, Config, ConfigError, parse_hostport
from mailgate.logs import setup_logging
from mailgate.smtp.server import StartupError
from mailgate.store.base import StoreError


def _with_overrides(cfg: Config, listen: str | None, api_listen: str | None) -> Config:
    if listen:
        parse_hostport(listen)
        cfg = dataclasses.replace(cfg, smtp=dataclasses.replace(cfg.smtp, listen=listen))
    if api_listen:
        parse_hostport(api_listen)
        cfg = dataclasses.replace(cfg, api=dataclasses.replace(cfg.api, listen=api_listen))
    return cfg


@click.command("serve")
@config_option
@click.option("--listen", default=None, help="Override [smtp] listen, e.g. 127.0.0.1:2525.")
@click.option("--api-listen", default=None, help="Override [api] listen, e.g. 127.0.0.1:8025.")
def serve_cmd(config_path: str | None, listen: str | None, api_listen: str | None) -> None:
    """Accept mail for the configured domains and process it.

    With no config file, listens on 127.0.0.1:2525 for localhost and example.test, stores
    everything in ./mailgate-data, and serves the API on 127.0.0.1:8025. Logs structured
    lines to stdout; stops cleanly on SIGTERM/SIGINT; SIGHUP (``systemctl reload``) re-reads
    the config file (see ``mailgate.app.Front.reload``).
    """
    cfg = load_cli_config(config_path)
    try:
        cfg = _with_overrides(cfg, listen, api_listen)
    except (ValueError, ConfigError) as exc:
        raise click.ClickException(f"--listen: {exc}") from None

    # The data dir as resolved at start (from --data-dir, $MAILGATE_DATA_DIR or the file).
    env = dict(os.environ)
    if data_dir_override():
        env[ENV_DATA_DIR] = cfg.store.data_dir

    def reload_config() -> Config:
        """The file again, with the same command-line overrides (raises ConfigError)."""
        from mailgate.app import load_config

        return _with_overrides(load_config(config_path, env=env), listen, api_listen)

    setup_logging(cfg.log.level, cfg.log.format)
    from mailgate.app import run_async, serve

    try:
        run_async(serve(cfg, reload_config))
    except (StartupError, StoreError) as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass
