"""The ``mailgate`` command: serve, check-config, send-test, messages, and the operator tools.

Each command lives in its own module of this package; this file only assembles the group.
"""

from __future__ import annotations

import importlib

import click

from mailgate import __version__
from mailgate.cli.check import check_config_cmd
from mailgate.cli.messages import messages_group
from mailgate.cli.send_test import send_test_cmd
from mailgate.cli.serve import serve_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mailgate")
def main() -> None:
    """mailgate: a self-hosted SMTP ingestion server for customer-support automation.

    Start with `mailgate serve`, send a first message with `mailgate send-test`, and see it
    with `mailgate messages list`.
    """


for _cmd in (serve_cmd, check_config_cmd, send_test_cmd, messages_group):
    main.add_command(_cmd)

# Operator tools, one module each.
_TOOLS = (
    ("mailgate.cli.parse", "parse_cmd"),
    ("mailgate.cli.auth", "auth_cmd"),
    ("mailgate.cli.quarantine", "quarantine_group"),
    ("mailgate.cli.rules", "rules_group"),
    ("mailgate.cli.replay", "replay_cmd"),
    ("mailgate.cli.audit", "audit_group"),
    ("mailgate.cli.dlq", "dlq_group"),
    ("mailgate.cli.outbox", "outbox_group"),
    ("mailgate.cli.banner", "banner_group"),
)
for _module, _attr in _TOOLS:
    try:
        _mod = importlib.import_module(_module)
    except ModuleNotFoundError as _exc:
        if _exc.name != _module:
            raise
        continue
    main.add_command(getattr(_mod, _attr))
