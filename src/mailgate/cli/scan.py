"""``mailgate scan FILE|-``: the configured engines' verdicts on one message (no server, no store).

For operators testing a rule or a threshold: the same clients and the same hold decision as
the ``spam`` and ``antivirus`` stages, against the daemons ``[spam]`` and ``[antivirus]`` name.
Exit status: 0 when every configured engine answered, 1 when one failed (down, slow, garbage,
too large), whatever the verdicts were.
"""

from __future__ import annotations

from typing import Any

import click

from mailgate.cli.common import config_option, json_option, load_cli_config, print_json, run
from mailgate.cli.parse import _read_input
from mailgate.config import Config
from mailgate.pipeline.stages.spam import should_hold, spam_field
from mailgate.scanners.base import ScanError
from mailgate.scanners.clamd import ClamdClient
from mailgate.scanners.rspamd import SPAM_ACTIONS, MessageFacts, RspamdClient


async def scan_message(cfg: Config, raw: bytes, facts: MessageFacts) -> dict[str, Any]:
    """``{"antivirus": {...}|None, "spam": {...}|None, "hold": [reasons], "errors": n}``."""
    out: dict[str, Any] = {"antivirus": None, "spam": None, "hold": [], "errors": 0}
    if cfg.antivirus.engine == "clamav":
        field: dict[str, Any] = {
            "engine": "clamav",
            "clean": None,
            "signature": None,
            "error": None,
        }
        try:
            verdict = await ClamdClient(cfg.antivirus).scan(raw)
            field["clean"], field["signature"] = verdict.clean, verdict.signature
            field["seconds"] = round(verdict.seconds, 4)
            if not verdict.clean:
                out["hold"].append("virus")
        except ScanError as exc:
            field["error"] = str(exc)
            out["errors"] += 1
        out["antivirus"] = field
    if cfg.spam.engine == "rspamd":
        client = RspamdClient(cfg.spam)
        try:
            spam = await client.check(raw, facts)
            hold = should_hold(cfg.spam, spam)
            out["spam"] = spam_field(spam, flagged=hold or spam.action in SPAM_ACTIONS)
            out["spam"]["seconds"] = round(spam.seconds, 4)
            if hold:
                out["hold"].append("spam")
        except ScanError as exc:
            out["spam"] = {"engine": "rspamd", "score": None, "flagged": False, "error": str(exc)}
            out["errors"] += 1
        finally:
            await client.close()
    return out


def _print_text(result: dict[str, Any]) -> None:
    av = result["antivirus"]
    if av is not None:
        if av["error"]:
            click.echo(f"antivirus (clamav): ERROR {av['error']}")
        elif av["clean"]:
            click.echo("antivirus (clamav): clean")
        else:
            click.echo(f"antivirus (clamav): VIRUS {av['signature']}")
    spam = result["spam"]
    if spam is not None:
        if spam.get("error"):
            click.echo(f"spam (rspamd): ERROR {spam['error']}")
        else:
            flagged = "flagged" if spam["flagged"] else "not flagged"
            click.echo(
                f"spam (rspamd): score {spam['score']:g} (reject at {spam['required']:g}),"
                f" action {spam['action']}, {flagged}"
            )
            for sym in spam["symbols"]:
                if sym["score"]:
                    desc = f"  {sym['description']}" if sym["description"] else ""
                    click.echo(f"  {sym['score']:+6.2f} {sym['name']}{desc}")
    click.echo(
        "verdict: "
        + ("held (" + ", ".join(result["hold"]) + ")" if result["hold"] else "delivered")
    )


@click.command("scan")
@config_option
@click.argument("source", metavar="FILE|-")
@click.option("--ip", default="", help="Client IP to tell rspamd (default: none).")
@click.option("--helo", default="", help="HELO name to tell rspamd.")
@click.option("--mail-from", default="", help="Envelope sender to tell rspamd.")
@click.option("--rcpt", multiple=True, help="Envelope recipient(s) to tell rspamd.")
@json_option
def scan_cmd(
    config_path: str | None,
    source: str,
    ip: str,
    helo: str,
    mail_from: str,
    rcpt: tuple[str, ...],
    as_json: bool,
) -> None:
    """Run the configured spam and virus engines on one message and print their verdicts."""
    cfg = load_cli_config(config_path)
    if cfg.spam.engine == "none" and cfg.antivirus.engine == "none":
        raise click.ClickException(
            'no engine configured: set [spam] engine = "rspamd" and/or [antivirus] engine = "clamav"'
        )
    raw = _read_input(source)
    facts = MessageFacts(client_ip=ip, helo=helo, mail_from=mail_from, rcpt_to=rcpt)

    async def body() -> dict[str, Any]:
        return await scan_message(cfg, raw, facts)

    result = run(body)
    if as_json:
        print_json(result)
    else:
        _print_text(result)
    if result["errors"]:
        raise SystemExit(1)
