"""``python -m mailgate`` runs the CLI."""

from mailgate.cli import main

main()
