"""A failing store does not make a worker spin: it backs off and logs sparingly, then recovers.

The failure is real: the worker process's file-size limit (``RLIMIT_FSIZE``, set from the test
with ``prlimit``) is lowered to one byte, so every write SQLite makes to its database and WAL
fails with EFBIG, as on a full disk, while the front process keeps accepting mail. serve's
output goes through a FIFO, so the worker's own log lines are not caught by the limit.
Raising the limit again is the repair; the mail spooled meanwhile must then be processed.
"""

from __future__ import annotations

import itertools
import logging
import os
import resource
import threading
import time
from pathlib import Path

import pytest

from mailgate.backoff import Backoff, LoopBackoff
from mailgate.store.base import StoreError
from tests.support.server import MailgateServer

MESSAGE = (
    b"From: customer@example.org\r\nTo: support@example.test\r\nSubject: order {n}\r\n"
    b"Message-ID: <order-{n}@example.org>\r\n\r\nWhere is my order?\r\n"
)


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    b = Backoff(initial=0.2, maximum=30.0)
    delays = [b.next_delay() for _ in range(12)]
    assert delays[:4] == [0.2, 0.4, 0.8, 1.6]
    assert max(delays) == 30.0 and delays[-1] == 30.0
    assert all(x <= y for x, y in itertools.pairwise(delays))
    assert b.reset() == 12
    assert b.next_delay() == 0.2


def test_loop_backoff_logs_once_per_interval_and_says_when_it_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("mailgate.test.backoff")
    guard = LoopBackoff(logger, "ingest", expected=(StoreError,), log_interval=60.0)
    with caplog.at_level(logging.INFO, logger="mailgate.test.backoff"):
        delays = [guard.failed(StoreError("commit failed: disk full")) for _ in range(20)]
        guard.succeeded()
        guard.succeeded()  # nothing more to say
    assert delays[0] == 0.2 and delays[-1] == 30.0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].exc_info is None  # expected: no traceback
    assert warnings[0].fields["error"] == "StoreError: commit failed: disk full"  # type: ignore[attr-defined]
    recovered = [r for r in caplog.records if r.getMessage() == "ingest recovered"]
    assert len(recovered) == 1
    assert recovered[0].fields == {"failures": 20}  # type: ignore[attr-defined]
    # a loop that flaps (fails, works, fails…) still writes one line of each kind per interval
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mailgate.test.backoff"):
        for _ in range(10):
            guard.failed(StoreError("commit failed: disk I/O error"))
            guard.succeeded()
    assert caplog.records == []  # both kinds were already logged in this interval


# ---------------------------------------------------------------------- a real failing store


class FifoLog:
    """serve's stdout through a FIFO read by a thread (no file-size limit applies to it)."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = path
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with open(self.path, "rb") as fifo:
            for raw in fifo:
                with self._lock:
                    self.lines.append((time.monotonic(), raw.decode("utf-8", "replace")))

    def text(self) -> str:
        with self._lock:
            return "".join(line for _, line in self.lines)

    def since(self, t: float) -> list[str]:
        with self._lock:
            return [line for at, line in self.lines if at >= t]


def worker_pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children]


def limit_writes(pids: list[int], limit: int) -> None:
    for pid in pids:
        hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)[1]
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, hard))


def processed(srv: MailgateServer) -> int:
    return sum(1 for r in srv.rows() if r["state"] != "spooled")


# every worker loop that writes: ingest, webhook dispatch (a receiver that is not there), the
# reply sender (a smarthost that is not there), the metrics publisher
LOOPS_TOML = """
[[webhooks]]
name = "nowhere"
url = "http://127.0.0.1:9/hook"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo="]

[reply]
enabled = true
smarthost = "127.0.0.1:9"
from = "Example Support <support@example.test>"
retry_schedule = "0s, 1h"
"""


def failing_store_run(tmp_path: Path, env: dict[str, str] | None = None) -> dict[str, float]:
    """Run serve, fail the worker's store for ``window`` seconds, repair; returns figures."""
    srv = MailgateServer(tmp_path, workers=1, env=env, extra_toml=LOOPS_TOML)
    fifo = FifoLog(srv.log_path)
    srv.log = fifo.text  # type: ignore[method-assign]  # log_path is a FIFO: read what was kept
    srv.start()
    window = 2.0
    try:
        srv.send(MESSAGE.replace(b"{n}", b"0"))
        srv.wait_processed(1)
        assert srv.smtp_port and srv.proc is not None
        workers = worker_pids(srv.proc.pid)
        assert len(workers) == 1, workers
        limit_writes(workers, 1)  # every write past the first byte: EFBIG, as on a full disk
        for n in range(1, 6):
            srv.send(MESSAGE.replace(b"{n}", str(n).encode()))  # the front still spools
        t0 = time.monotonic()
        time.sleep(window)
        during = fifo.since(t0)
        stuck = processed(srv)
        limit_writes(workers, resource.RLIM_INFINITY)  # the repair
        repaired = time.monotonic()
        srv.wait_processed(6, timeout=45)
        resumed = time.monotonic() - repaired
        assert worker_pids(srv.proc.pid) == workers  # the same worker: it never died
        return {
            "lines": len(during),
            "lines_per_s": len(during) / window,
            "tracebacks": sum("Traceback" in line for line in during),
            "stuck_processed": stuck,
            "resumed_s": resumed,
            "log": fifo.text(),  # type: ignore[dict-item]
        }
    finally:
        srv.stop()


@pytest.mark.slow
def test_failing_store_backs_off_and_recovers(tmp_path: Path) -> None:
    got = failing_store_run(tmp_path)
    log = str(got["log"])
    assert got["stuck_processed"] == 1, log  # nothing was processed while the disk was "full"
    # one line per failure key per 10 s at most; a few distinct loops (ingest, webhook
    # dispatch, reply sender, metrics publisher)
    assert got["lines"] <= 8, log
    assert got["tracebacks"] == 0, log
    assert 'event="ingest failed; backing off"' in log, log
    assert "ingest recovered" in log, log
    # backed off at most 30 s; the first retries come fast
    assert got["resumed_s"] < 40, got
