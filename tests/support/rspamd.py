"""rspamd from Debian's rspamd package, offline, with the stock configuration untouched.

``--var`` points LOCAL_CONFDIR, DBDIR, RUNDIR and LOGDIR at a temporary tree; the local.d /
override.d files written there bind the workers to free loopback ports, switch off every
module that needs the network (rbl, hfilter, spf, dkim, dmarc, arc, asn, phishing, and
fuzzy_check, which resolves its servers through the system resolver at load time) and point
rspamd's resolver at a loopback port where nothing answers. Run as root it needs ``-i``.

The first start compiles the hyperscan databases into DBDIR (~10 s); DBDIR is session-scoped,
so a restart (an outage test) and later tests in the run reuse it (< 1 s).
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, free_port, require_binary

START_TIMEOUT = 60.0
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
NETWORK_MODULES = (
    "rbl",
    "hfilter",
    "spf",
    "dkim",
    "dmarc",
    "arc",
    "asn",
    "phishing",
    "fuzzy_check",
)


class Rspamd:
    def __init__(self, root: Path, dbdir: Path) -> None:
        self.root = root
        self.port = free_port()
        self.controller_port = free_port()
        self.dns_port = free_port()
        local = root / "local"
        (local / "local.d").mkdir(parents=True, exist_ok=True)
        (local / "override.d").mkdir(parents=True, exist_ok=True)
        for sub in ("run", "log"):
            (root / sub).mkdir(exist_ok=True)
        over = local / "override.d"
        (over / "worker-normal.inc").write_text(
            f'bind_socket = "127.0.0.1:{self.port}";\ncount = 1;\n'
        )
        (over / "worker-controller.inc").write_text(
            f'bind_socket = "127.0.0.1:{self.controller_port}";\ncount = 1;\n'
        )
        (over / "worker-proxy.inc").write_text(
            f'bind_socket = "127.0.0.1:{free_port()}";\ncount = 0;\n'
        )
        for module in NETWORK_MODULES:
            (over / f"{module}.conf").write_text("enabled = false;\n")
        (local / "local.d" / "options.inc").write_text(
            "dns {\n"
            f'  nameserver = ["127.0.0.1:{self.dns_port}"];\n'
            "  timeout = 0.2s;\n"
            "  retransmits = 1;\n"
            "}\n"
        )
        (local / "local.d" / "logging.inc").write_text('level = "notice";\n')
        binary = require_binary("rspamd", "rspamd")
        self.daemon = Daemon(
            [
                binary,
                "-f",
                "-i",
                "-u",
                "root",
                "-g",
                "root",
                "--var",
                f"LOCAL_CONFDIR={local}",
                "--var",
                f"DBDIR={dbdir}",
                "--var",
                f"RUNDIR={root / 'run'}",
                "--var",
                f"LOGDIR={root / 'log'}",
            ],
            root / "rspamd.out",
            self._pong,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _pong(self) -> bool:
        try:
            with _NO_PROXY.open(self.url + "/ping", timeout=1) as resp:
                return bool(resp.read().strip() == b"pong")
        except OSError:
            return False

    def start(self) -> Rspamd:
        self.daemon.start(START_TIMEOUT)
        return self

    def stop(self) -> None:
        self.daemon.stop()


@pytest.fixture(scope="session")
def rspamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rspamd]:
    server = Rspamd(tmp_path_factory.mktemp("rspamd"), tmp_path_factory.mktemp("rspamd-db"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def rspamd_running(rspamd: Rspamd) -> Rspamd:
    """The session rspamd, started again if an earlier test left it stopped."""
    if not rspamd.daemon.running:
        rspamd.start()
    return rspamd
