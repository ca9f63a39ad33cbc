"""Helpers every CLI command shares: loading the config, opening the store, printing.

User mistakes surface as ``click.ClickException`` (one line on stderr, exit 1), never a
traceback.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import click

from mailgate.config import Config, ConfigError, load_config
from mailgate.store.base import NotFound, StoreError
from mailgate.store.sqlite import SqliteStore

T = TypeVar("T")

config_option = click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    envvar="MAILGATE_CONFIG",
    help="Path to mailgate.toml (default: $MAILGATE_CONFIG, else built-in defaults).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def load_cli_config(path: str | None) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@asynccontextmanager
async def open_store(cfg: Config) -> AsyncIterator[SqliteStore]:
    """The configured store, opened for a CLI command (works while ``serve`` runs: WAL)."""
    store = SqliteStore(cfg.store.data_dir, durability=cfg.store.durability)
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


def run_with_store(cfg: Config, query: Callable[[SqliteStore], Awaitable[T]]) -> T:
    """Open the store, run one ``query(store)``, close it: the body of most CLI commands."""

    async def body() -> T:
        async with open_store(cfg) as store:
            return await query(store)

    return run(body)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2, default=str) + "\n")
