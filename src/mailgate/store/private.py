"""Owner-only files and directories in the data dir, whatever the process umask.

The data dir holds raw mail, attachments and generated secrets; a umask of 022 (the usual
default outside systemd) would make them world-readable. Everything mailgate creates there is
0600 (files) or 0700 (directories). Things that already exist keep their mode: an operator's
choice (or systemd's ``StateDirectoryMode=``) for the data dir itself is not overridden.
"""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_private_dirs(path: str | Path) -> Path:
    """Create ``path`` and its missing parents as 0700; existing directories are left alone."""
    path = Path(path)
    missing: list[Path] = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # created meanwhile by another process: its creator set the mode
        os.chmod(d, DIR_MODE)  # mkdir's mode is masked by the umask
    return path


def create_private_file(path: str | Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist (a no-op when it does).

    For files another library opens later (SQLite creates its -wal and -shm files with the
    mode of the database file, so a 0600 database gives 0600 companions).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def write_private_file(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (created or truncated) and leave it 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), FILE_MODE)
        fh.write(data)
