"""The ``mailgate`` command: serve, check-config, send-test, messages, and the operator tools.

Each command lives in its own module of this package; this file only assembles the group.
"""

from __future__ import annotations

import click

from mailgate import __version__
from mailgate.cli.audit import audit_group
from mailgate.cli.auth import auth_cmd
from mailgate.cli.backup import backup_cmd, restore_cmd
from mailgate.cli.banner import banner_group
from mailgate.cli.check import check_config_cmd
from mailgate.cli.db import db_group
from mailgate.cli.db_schema import migrate_cmd, status_cmd
from mailgate.cli.dlq import dlq_group
from mailgate.cli.erase import erase_cmd
from mailgate.cli.keys import keys_group
from mailgate.cli.messages import messages_group
from mailgate.cli.model import model_group
from mailgate.cli.outbox import outbox_group
from mailgate.cli.parse import parse_cmd
from mailgate.cli.purge import purge_cmd
from mailgate.cli.quarantine import quarantine_group
from mailgate.cli.replay import replay_cmd
from mailgate.cli.rules import rules_group
from mailgate.cli.scan import scan_cmd
from mailgate.cli.send_test import send_test_cmd
from mailgate.cli.serve import serve_cmd

# the schema commands of ``mailgate db`` (either backend), beside its ``check``
db_group.add_command(status_cmd)
db_group.add_command(migrate_cmd)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mailgate")
def main() -> None:
    """mailgate: a self-hosted SMTP ingestion server for customer-support automation.

    Start with `mailgate serve`, send a first message with `mailgate send-test`, and see it
    with `mailgate messages list`.
    """


for _cmd in (
    serve_cmd,
    check_config_cmd,
    send_test_cmd,
    messages_group,
    parse_cmd,
    auth_cmd,
    rules_group,
    quarantine_group,
    replay_cmd,
    audit_group,
    dlq_group,
    outbox_group,
    banner_group,
    keys_group,
    scan_cmd,
    model_group,
    erase_cmd,
    purge_cmd,
    backup_cmd,
    restore_cmd,
    db_group,
):
    main.add_command(_cmd)
