"""``mailgate banner set|clear|show``: an incident message added to auto-replies until cleared.

``banner set "We are investigating an outage" --queue status`` adds the text at the top of
every acknowledgement of the ``status`` queue; without ``--queue`` it goes into every reply.
A running ``serve`` picks a change up with the next message (banners are read per reply).
"""

from __future__ import annotations

import getpass
import time

import click

from mailgate.cli.common import (
    config_option,
    json_option,
    load_cli_config,
    open_store,
    print_json,
    run,
    run_with_store,
)
from mailgate.reply.compose import clean

MAX_BANNER = 1000
queue_option = click.option(
    "--queue", "-q", default="", help="Only replies of this queue (default: every reply)."
)


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


@click.group("banner")
def banner_group() -> None:
    """Incident banners shown at the top of auto-replies, per queue or for all."""


@banner_group.command("set")
@config_option
@click.argument("text")
@queue_option
def set_cmd(config_path: str | None, text: str, queue: str) -> None:
    """Show TEXT in every reply of the queue (or every reply) until `banner clear`."""
    body_text = " ".join(line.strip() for line in text.splitlines()).strip()
    if not body_text:
        raise click.BadParameter("the banner text is empty", param_hint="TEXT")
    if len(body_text) > MAX_BANNER:
        raise click.BadParameter(f"at most {MAX_BANNER} characters", param_hint="TEXT")
    queue = clean(queue, 100)
    cfg = load_cli_config(config_path)

    async def body() -> None:
        async with open_store(cfg) as store:
            await store.set_banner(queue, body_text, by=_who())

    run(body)
    click.echo(f"banner set for {'queue ' + queue if queue else 'every queue'}")


@banner_group.command("clear")
@config_option
@queue_option
def clear_cmd(config_path: str | None, queue: str) -> None:
    """Remove the banner of the queue (or the one for every queue)."""
    cfg = load_cli_config(config_path)

    async def body() -> bool:
        async with open_store(cfg) as store:
            return await store.clear_banner(queue)

    where = f"queue {queue}" if queue else "every queue"
    if run(body):
        click.echo(f"banner cleared for {where}")
    else:
        click.echo(f"no banner was set for {where}")


@banner_group.command("show")
@config_option
@json_option
def show_cmd(config_path: str | None, as_json: bool) -> None:
    """The banners in force."""
    cfg = load_cli_config(config_path)

    banners = run_with_store(cfg, lambda store: store.list_banners())
    if as_json:
        print_json(
            [
                {
                    "queue": b.queue or None,
                    "text": b.text,
                    "setAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(b.set_at)),
                    "setBy": b.set_by,
                }
                for b in banners
            ]
        )
        return
    if not banners:
        click.echo("no banners")
        return
    for b in banners:
        click.echo(f"{b.queue or '(every queue)'}: {b.text}")
