"""clamd from Debian's clamav-daemon with the repo's test-only signatures (fixtures/scan/clamav).

``clamd`` fixture (session): one clamd on a free loopback port, foreground, no freshclam, no
network; ready in well under a second. Tests that stop it (an outage) call ``restart()``.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, free_port, require_binary

SIGNATURES = Path(__file__).resolve().parents[2] / "fixtures" / "scan" / "clamav"
START_TIMEOUT = 20.0


class Clamd:
    def __init__(self, root: Path, stream_max: str = "2M") -> None:
        self.root = root
        self.port = free_port()
        db = root / "db"
        db.mkdir(parents=True, exist_ok=True)
        for sig in SIGNATURES.glob("mailgate-test.*db"):
            shutil.copy(sig, db / sig.name)
        self.conf = root / "clamd.conf"
        self.conf.write_text(
            "Foreground yes\n"
            f"TCPSocket {self.port}\n"
            "TCPAddr 127.0.0.1\n"
            f"DatabaseDirectory {db}\n"
            f"StreamMaxLength {stream_max}\n"
            "SelfCheck 0\n"
            "LogTime yes\n"
            f"PidFile {root / 'clamd.pid'}\n"
        )
        binary = require_binary("clamd", "clamav-daemon")
        self.daemon = Daemon([binary, "-c", str(self.conf)], root / "clamd.log", self._pong)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"zPING\0")
                return s.recv(16).startswith(b"PONG")
        except OSError:
            return False

    def start(self) -> Clamd:
        self.daemon.start(START_TIMEOUT)
        return self

    def stop(self) -> None:
        self.daemon.stop()


@pytest.fixture(scope="session")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clamd]:
    server = Clamd(tmp_path_factory.mktemp("clamd")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def clamd_running(clamd: Clamd) -> Clamd:
    """The session clamd, started again if an earlier test left it stopped."""
    if not clamd.daemon.running:
        clamd.start()
    return clamd
