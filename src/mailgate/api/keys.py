"""Secrets mailgate generates for itself on first start, kept in ``<data_dir>/keys/`` (0600).

Used for the attachment URL signing key and the quick-start API token when the config names
none. A file is created with ``O_EXCL`` so two processes starting at once agree on one value.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from mailgate.store.private import make_private_dirs


def keys_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "keys"


def read_or_create(path: Path, make: int = 32) -> tuple[str, bool]:
    """The secret stored at ``path``, creating it (``make`` random bytes, url-safe text) if absent.

    Returns ``(value, created)``.
    """
    make_private_dirs(path.parent)
    try:
        value = path.read_text(encoding="ascii").strip()
        if value:
            return value, False
    except FileNotFoundError:
        pass
    value = secrets.token_urlsafe(make)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # another process won the race (or left an empty file): use theirs if readable
        existing = path.read_text(encoding="ascii").strip()
        if existing:
            return existing, False
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(value + "\n")
    os.chmod(path, 0o600)
    return value, True
