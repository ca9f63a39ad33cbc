"""A throwaway PostgreSQL cluster under the tests (Debian's ``postgresql`` package).

``pg_cluster`` (session): ``initdb`` in a temp dir and ``postgres`` in the foreground on a free
loopback port, both as the ``postgres`` user (``initdb`` refuses root), stopped at the end of
the session also when tests failed. ``pg_dsn`` (function): a fresh database in that cluster,
so each test starts empty. A missing package fails the test: CI installs it (``.ci/run``).

Connections are TCP with a password (scram-sha-256), as a production DSN would be.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
USER = "postgres"
PASSWORD = "mailgate-test-pw"
START_TIMEOUT = 30.0


def _runuser(*argv: str, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    cmd = list(argv) if os.geteuid() != 0 else ["runuser", "-u", USER, "--", *argv]
    return subprocess.run(cmd, check=True, capture_output=True, timeout=120, **kwargs)  # type: ignore[call-overload,no-any-return]


class PgCluster:
    """One cluster: its directory, port, superuser DSN; ``create_database`` for a test."""

    def __init__(self, root: Path, settings: dict[str, str] | None = None) -> None:
        if not (PG_BIN / "postgres").exists():
            raise AssertionError(f"{PG_BIN}/postgres not found: install Debian's postgresql")
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.settings = dict(settings or {})  # extra ``-c name=value`` (a bench's diagnostics)

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> PgCluster:
        pw = pwd.getpwnam(USER)
        os.chown(self.root, pw.pw_uid, pw.pw_gid)
        os.chmod(self.root, 0o700)
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        _runuser(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-U",
            USER,
            "--auth-host=scram-sha-256",
            "--auth-local=peer",
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
            "--no-instructions",
        )
        argv = [
            str(PG_BIN / "postgres"),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={self.root}",
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=64MB",
            "-c",
            "synchronous_commit=on",
        ]
        for name, value in self.settings.items():
            argv += ["-c", f"{name}={value}"]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", USER, "--", *argv]
        log = open(self.root / "postgres.log", "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"postgres exited {self.proc.returncode}:\n{self.log()}")
            ready = subprocess.run(
                [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
                check=False,
            )
            if ready.returncode == 0:
                return self
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"postgres not ready in {START_TIMEOUT}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return (self.root / "postgres.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        env = dict(os.environ, PGPASSWORD=PASSWORD)
        out = subprocess.run(
            [
                str(PG_BIN / "psql"),
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                self.dsn(dbname),
                "-c",
                sql,
            ],
            capture_output=True,
            check=True,
            timeout=60,
            env=env,
        )
        return out.stdout.decode()

    def create_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.psql(f"CREATE DATABASE {name}")
        return self.dsn(name)

    def stop(self) -> None:
        """Fast shutdown (SIGINT) of the group; SIGKILL if it lingers."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for sig, wait in ((signal.SIGINT, 15.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    root = Path(tempfile.mkdtemp(prefix="mailgate-pg-"))
    cluster = PgCluster(root)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_dsn(pg_cluster: PgCluster) -> str:
    """A fresh, empty database of the session's cluster."""
    return pg_cluster.create_database()
