"""The ``mailgate`` command: serve, check-config, send-test, messages, and the operator tools.

Each command lives in its own module of this package; this file only names them. A command's
module is imported when that command runs (or when ``--help`` lists it), so ``mailgate
messages list`` does not pay for the classifier, the scanners and aiohttp that ``serve`` needs.
"""

from __future__ import annotations

import importlib

import click

from mailgate import __version__

# command name -> (module, attribute); the order is the one ``--help`` shows.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("serve", "serve_cmd"),
    "check-config": ("check", "check_config_cmd"),
    "send-test": ("send_test", "send_test_cmd"),
    "messages": ("messages", "messages_group"),
    "parse": ("parse", "parse_cmd"),
    "auth": ("auth", "auth_cmd"),
    "rules": ("rules", "rules_group"),
    "quarantine": ("quarantine", "quarantine_group"),
    "replay": ("replay", "replay_cmd"),
    "audit": ("audit", "audit_group"),
    "dlq": ("dlq", "dlq_group"),
    "outbox": ("outbox", "outbox_group"),
    "banner": ("banner", "banner_group"),
    "keys": ("keys", "keys_group"),
    "scan": ("scan", "scan_cmd"),
    "model": ("model", "model_group"),
    "erase": ("erase", "erase_cmd"),
    "purge": ("purge", "purge_cmd"),
    "backup": ("backup", "backup_cmd"),
    "restore": ("backup", "restore_cmd"),
    "db": ("db", "db_group"),
}


def load_command(name: str) -> click.Command:
    """Import the module that defines `name` and return its command."""
    module_name, attr = COMMANDS[name]
    module = importlib.import_module(f"mailgate.cli.{module_name}")
    command: click.Command = getattr(module, attr)
    if name == "db" and isinstance(command, click.Group):
        # the schema commands of ``mailgate db`` (either backend), beside its ``check``
        from mailgate.cli.db_schema import migrate_cmd, status_cmd

        command.add_command(status_cmd)
        command.add_command(migrate_cmd)
    return command


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        return load_command(cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mailgate")
def main() -> None:
    """mailgate: a self-hosted SMTP ingestion server for customer-support automation.

    Start with `mailgate serve`, send a first message with `mailgate send-test`, and see it
    with `mailgate messages list`.
    """
