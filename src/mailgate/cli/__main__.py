"""``python -m mailgate.cli`` runs the CLI (used by tests to run the installed code)."""

from mailgate.cli import main

main()
