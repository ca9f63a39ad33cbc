"""Helpers every CLI command shares: loading the config, opening the store, printing.

User mistakes surface as ``click.ClickException`` (one line on stderr, exit 1), never a
traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from mailgate.config import ENV_CONFIG, ENV_DATA_DIR, Config, ConfigError
from mailgate.store.base import NotFound, StoreError
from mailgate.store.ports import Store

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

_DATA_DIR_META = "mailgate.data_dir"


def _remember_data_dir(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.meta[_DATA_DIR_META] = value


config_path_option = click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    envvar=ENV_CONFIG,
    help="Path to mailgate.toml (default: $MAILGATE_CONFIG, else built-in defaults).",
)
# Not passed to the command: ``load_cli_config`` picks it up from the click context, so every
# command that takes --config takes --data-dir too without a parameter of its own.
data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    envvar=ENV_DATA_DIR,
    expose_value=False,
    callback=_remember_data_dir,
    help="The server's data directory (default: $MAILGATE_DATA_DIR, else [store] data_dir).",
)


def config_option(fn: F) -> F:
    """``--config/-c`` and ``--data-dir``: how a command finds the config and the server's store."""
    return config_path_option(data_dir_option(fn))


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def data_dir_override() -> str | None:
    """The ``--data-dir`` given to the running command (or $MAILGATE_DATA_DIR), if any."""
    ctx = click.get_current_context(silent=True)
    value = ctx.meta.get(_DATA_DIR_META) if ctx is not None else None
    return str(value) if value else None


def load_cli_config(path: str | None) -> Config:
    """The config at ``path`` (or $MAILGATE_CONFIG), with ``--data-dir`` applied if given."""
    data_dir = data_dir_override()
    env = dict(os.environ)
    if data_dir:
        env[ENV_DATA_DIR] = data_dir
    try:
        from mailgate.app import load_config

        return load_config(path, env=env)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def require_store(cfg: Config) -> None:
    """Refuse a data dir without a store: a command run from the wrong directory (or with the
    wrong config) must say so, not create an empty store and report "No messages"."""
    from mailgate.app import store_exists

    if not store_exists(cfg):
        where = (
            f"at {Path(cfg.store.data_dir).absolute()}"
            if cfg.store.backend == "sqlite"
            else "in the configured database"
        )
        raise click.ClickException(f"no mailgate store {where} (use --config or --data-dir)")


@asynccontextmanager
async def open_store(cfg: Config) -> AsyncIterator[Store]:
    """The server's existing store, opened for a CLI command (works while ``serve`` runs: WAL).

    Never creates one (see ``require_store``).
    """
    from mailgate.app import build_store

    require_store(cfg)
    store = build_store(cfg)
    try:
        await store.open()
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        yield store
    finally:
        await store.close()


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    """Run an async CLI body; map store lookups that fail to one-line user errors."""
    try:
        return asyncio.run(coro_fn())  # type: ignore[arg-type]
    except NotFound as exc:
        raise click.ClickException(f"not found: {exc}") from None
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None


def run_with_store(cfg: Config, query: Callable[[Store], Awaitable[T]]) -> T:
    """Open the store, run one ``query(store)``, close it: the body of most CLI commands."""

    async def body() -> T:
        async with open_store(cfg) as store:
            return await query(store)

    return run(body)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2, default=str) + "\n")
