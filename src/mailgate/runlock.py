"""One ``mailgate serve`` per data dir: an exclusive ``flock`` held for the server's lifetime.

Two servers on one store would both claim the spool and both bind the runfile; the second one
must refuse to start and say who holds the dir. ``flock`` is released by the kernel when the
process dies, so a crash leaves no stale lock: the file ``<data_dir>/serve.lock`` stays (removing
it would race a starting server that already opened it) and only its content, the holder's
pid, is cleared on a clean exit.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_NAME = "serve.lock"


class DataDirLocked(RuntimeError):
    """Another process holds the data dir."""


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock and write our pid into it, or raise ``DataDirLocked`` naming the holder."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder else "another process"
            raise DataDirLocked(
                f"store.data_dir = {str(self.path.parent)!r} is in use by {who}"
                " (another mailgate serve); stop it or use another --data-dir"
            ) from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Clear the pid (nobody holds the dir now) and drop the lock."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the last descriptor releases the flock
        self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
