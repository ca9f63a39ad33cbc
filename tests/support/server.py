"""A real ``mailgate serve`` in a subprocess, for end-to-end tests.

Usage::

    with MailgateServer(tmp_path, extra_toml='[[webhooks]]\\nurl = "..."') as srv:
        with srv.smtp() as client:                   # smtplib.SMTP connected to the listener
            client.sendmail("a@example.org", ["support@example.test"], raw)
        srv.wait_processed(1)                         # until 1 message left the spool
        env = srv.envelopes()[0]                      # processed envelopes, oldest first
        srv.cli("messages", "list", "--json")         # runs the CLI against the same config

or the ``mailgate_server`` fixture (a factory: ``srv = mailgate_server(extra_toml=...)``),
which stops every server it started, also when the test fails. Ports are 0 (the kernel picks);
the bound addresses are read from ``<data_dir>/serve.json``. ``base_toml`` gives the defaults:
domains example.test (mailboxes support, billing, security; tenant "default"), catch-all
``*.support.example.test`` (tenants acme and globex), auth disabled unless ``auth=True``, API on.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import smtplib
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

START_TIMEOUT = 30.0

BASE_TOML = """\
[smtp]
listen = "127.0.0.1:0"
hostname = "mx.test.mailgate"
max_message_size = "{max_size}"
max_recipients = {max_recipients}
greet_delay = "0s"
{smtp_extra}

[store]
data_dir = "{data_dir}"

[[domains]]
name = "example.test"
mailboxes = ["support", "billing", "security"]
tenant = "default"

[[domains]]
name = "*.support.example.test"
catch_all = true
tenants = ["acme", "globex"]

[auth]
enabled = {auth}
{auth_extra}

[api]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:8025"
[[api.tokens]]
token = "test-token-0123456789abcdef0123456789"
tenant = "default"

[ingest]
workers = {workers}
poll_interval = "100ms"

[log]
level = "info"
"""


def toml_str(value: str) -> str:
    return json.dumps(value)


def wait_for(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll ``check`` until it holds; AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class MailgateServer:
    def __init__(
        self,
        tmp_path: Path,
        *,
        extra_toml: str = "",
        smtp_extra: str = "",
        auth: bool = False,
        auth_extra: str = "",
        workers: int = 1,
        max_size: str = "1MB",
        max_recipients: int = 10,
        config_text: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.dir = tmp_path
        self.data_dir = tmp_path / "data"
        self.config_path = tmp_path / "mailgate.toml"
        if config_text is None:
            config_text = (
                BASE_TOML.format(
                    data_dir=self.data_dir,
                    auth="true" if auth else "false",
                    auth_extra=auth_extra,
                    workers=workers,
                    max_size=max_size,
                    max_recipients=max_recipients,
                    smtp_extra=smtp_extra,
                )
                + "\n"
                + extra_toml
            )
        self.config_path.write_text(config_text)
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = tmp_path / "serve.log"
        self.smtp_host = "127.0.0.1"
        self.smtp_port = 0
        self.api_base = ""

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> MailgateServer:
        runfile = self.data_dir / "serve.json"
        if runfile.exists():
            runfile.unlink()
        env = dict(os.environ)
        env.pop("MAILGATE_CONFIG", None)
        env.pop("MAILGATE_DATA_DIR", None)
        env.update(self.env)
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailgate.cli", "serve", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: kill() takes the workers too
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mailgate serve exited with {self.proc.returncode}:\n{self.log()}"
                )
            if runfile.exists():
                info = json.loads(runfile.read_text())
                host, port = info["smtp"].rsplit(":", 1)
                self.smtp_host, self.smtp_port = host, int(port)
                self.api_base = f"http://{info['api']}" if info.get("api") else ""
                return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"mailgate serve did not start in {START_TIMEOUT}s:\n{self.log()}")

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reap_group()
        code = self.proc.returncode
        self.proc = None
        self._log.close()
        return code

    def kill(self) -> None:
        """SIGKILL the whole service (front and workers): a crash, not a shutdown."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        self.proc = None
        self._log.close()

    def _reap_group(self) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> MailgateServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.stop()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    # ------------------------------------------------------------------ talking to it

    def smtp(self, timeout: float = 30.0) -> smtplib.SMTP:
        return smtplib.SMTP(
            self.smtp_host, self.smtp_port, timeout=timeout, local_hostname="client.test"
        )

    def send(
        self,
        raw: bytes | str,
        *,
        mail_from: str = "customer@example.org",
        rcpt_to: list[str] | None = None,
    ) -> str:
        """Send one message; returns the server's 250 text (which names the message id)."""
        data = raw.encode() if isinstance(raw, str) else raw
        with self.smtp() as client:
            client.ehlo()
            client.mail(mail_from)
            for rcpt in rcpt_to or ["support@example.test"]:
                code, resp = client.rcpt(rcpt)
                if code >= 400:
                    raise smtplib.SMTPRecipientsRefused({rcpt: (code, resp)})
            code, resp = client.data(data)
            if code != 250:
                raise smtplib.SMTPDataError(code, resp)
        return resp.decode()

    @contextlib.contextmanager
    def db(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection, closed on exit (a leaked one can outlive ``serve``'s files)."""
        conn = sqlite3.connect(
            f"file:{self.data_dir / 'mailgate.sqlite'}?mode=ro", uri=True, timeout=10
        )
        conn.row_factory = sqlite3.Row
        try:
            yield conn
        finally:
            conn.close()

    def rows(self) -> list[dict[str, Any]]:
        with self.db() as conn:
            return [dict(r) for r in conn.execute("SELECT * FROM messages ORDER BY seq")]

    def wait_processed(self, expected: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until at least ``expected`` messages have left the spool; returns all rows."""
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = self.rows()
            if sum(1 for r in rows if r["state"] != "spooled") >= expected:
                return rows
            time.sleep(0.05)
        raise AssertionError(
            f"only {sum(1 for r in rows if r['state'] != 'spooled')} of {expected} processed:\n{self.log()}"
        )

    def envelopes(self) -> list[dict[str, Any]]:
        return [json.loads(r["envelope"]) for r in self.rows() if r["envelope"]]

    def cli(
        self, *args: str, input: bytes | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        env = dict(os.environ)
        env["MAILGATE_CONFIG"] = str(self.config_path)
        env.update(self.env)
        result = subprocess.run(
            [sys.executable, "-m", "mailgate.cli", *args],
            capture_output=True,
            env=env,
            input=input,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"mailgate {' '.join(args)} failed: {result.stderr.decode()}")
        return result


@pytest.fixture
def mailgate_server(tmp_path: Path) -> Iterator[Any]:
    """Factory fixture: ``srv = mailgate_server(**MailgateServer kwargs)``; all stopped at the end."""
    started: list[MailgateServer] = []
    counter = iter(range(1000))

    def factory(**kwargs: Any) -> MailgateServer:
        sub = tmp_path / f"srv{next(counter)}"
        sub.mkdir()
        srv = MailgateServer(sub, **kwargs)
        started.append(srv)
        return srv.start()

    try:
        yield factory
    finally:
        for srv in started:
            if srv.proc is not None:
                srv.stop()
