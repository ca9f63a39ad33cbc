"""A daemon in the foreground under a test: start, wait until it answers, stop (also on failure).

Shared by the clamd and rspamd fixtures. A missing binary fails the test: CI installs the
packages (``.ci/run``), and a skip would hide that the scanners were never exercised.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def require_binary(name: str, package: str) -> str:
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None
    )
    if path is None:
        raise AssertionError(f"{name} not found: install Debian's {package} (see .ci/run)")
    return path


class Daemon:
    """One foreground process in its own process group, its output in ``log_path``."""

    def __init__(self, argv: list[str], log_path: Path, ready: Callable[[], bool]) -> None:
        self.argv = argv
        self.log_path = log_path
        self.ready = ready
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it; closed on stop
        self.proc = subprocess.Popen(
            self.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.argv[0]} exited {self.proc.returncode}:\n{self.log()}")
            if self.ready():
                return
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"{self.argv[0]} not ready in {timeout}s:\n{self.log()}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the group, SIGKILL it if it lingers; waits until the port is free."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=timeout)
                break
            except subprocess.TimeoutExpired:
                continue
        # rspamd's workers share the group; make sure none outlives the main process
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    @property
    def pid(self) -> int:
        """The daemon's pid, also its process group id (rspamd's workers share the group)."""
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""
