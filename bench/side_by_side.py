#!/usr/bin/env python3
"""mailgate against the servers a user would pick instead, in one interleaved run.

Built on the shared side-by-side harness (``../shared/bench/side_by_side.py``, same server
set-ups for Postfix and Haraka), copied here so the repository is self-contained, and extended
with per-message CPU of mailgate's two processes.

Servers (each started here, on 127.0.0.1 only, and stopped at the end):

* ``postfix``: Postfix receiving durably (queue file fsynced before the 250), discard transport,
  a private instance in a temp dir (``/etc/postfix`` is never touched);
* ``haraka``: Haraka 3, one process, ``queue/discard`` (``npm install`` into
  ``~/.cache/mailgate-bench/haraka`` on first use; config in ``bench/haraka/``);
* ``bare``: bare aiosmtpd (``bench/reference_null.py``), the Python protocol ceiling;
* ``mailgate``: ``mailgate serve`` with the default config (durability, workers), auth off,
  and a webhook target: *delivered* counts webhooks received by a keep-alive HTTP receiver in
  this process; ``mailgate_normal`` / ``mailgate_w1`` / ``mailgate_w2`` / ``mailgate_nohook``
  are variants (``durability = "normal"``; one worker; two workers taking the oldest mail
  alike, ``backlog_per_worker = 0``; no webhook: delivered = processed rows);
  ``mailgate_uvloop`` runs serve under ``--uvloop-python`` (serve uses uvloop when importable).

Every cell (4 KB and 100 KB, 1 and 20 sessions, one connection per message, Postfix's
``smtp-source``) runs each server once per round, in turn, ROUNDS times; the median is printed.
For mailgate it also prints CPU per message: ``front_us`` (the serve process: SMTP + spool
commit) and ``worker_us`` (ingest worker children: parse, pipeline, commit, webhook), from
``/proc/PID/stat`` deltas over the cell (10 ms tick resolution, so use counts ≥ 500).
Ratios are only meaningful inside one run: the machines are shared and noisy.

    python bench/side_by_side.py [--servers mailgate,postfix,haraka] [--rounds 3]
        [--n4 2000] [--n100 800] [--cells 4k1,4k20,100k1,100k20]

Needs smtp-source (Debian ``postfix``; its daemon is not started by apt), and Node + npm for
Haraka. Every run is bounded by a message count and a timeout.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.smtp_bench import TIMEOUT, free_port, smtp_source, wait_port  # noqa: E402

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


class Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver would
    count = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        with Receiver.lock:
            Receiver.count += 1
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class Bare:
    def __init__(self, py: str) -> None:
        self.port = free_port()
        self.p = subprocess.Popen(
            [py, str(HERE / "reference_null.py"), "--listen", f"127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_port(self.port, timeout=60.0)

    def run(self, size: int, n: int, s: int) -> dict[str, Any]:
        return {"accepted": n / smtp_source(self.port, size, n, s)}

    def stop(self) -> None:
        self.p.send_signal(signal.SIGTERM)
        self.p.wait(30)


class Mailgate:
    def __init__(self, py: str, recv_port: int, *, extra: str = "", hook: bool = True) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="side-mg-"))
        self.port, self.hook = free_port(), hook
        hook_cfg = (
            f'[[webhooks]]\nname = "app"\nurl = "http://127.0.0.1:{recv_port}/hook"\n'
            f'secrets = ["{SECRET}"]\n'
            if hook
            else ""
        )
        cfg = self.dir / "mailgate.toml"
        cfg.write_text(
            f'[smtp]\nlisten = "127.0.0.1:{self.port}"\nhostname = "mx.bench"\n'
            f'max_message_size = "25MB"\nmax_connections_per_ip = 1000\n'
            f"max_messages_per_ip_per_minute = 0\n"
            f'[store]\ndata_dir = "{self.dir / "data"}"\n{extra}'
            f'[[domains]]\nname = "example.test"\nmailboxes = ["support"]\n'
            f'[auth]\nenabled = false\n[api]\nenabled = false\n[log]\nlevel = "warning"\n'
            + hook_cfg
        )
        self.err = (self.dir / "serve.err").open("w")  # closed in stop()
        self.p = subprocess.Popen(
            [py, "-m", "mailgate.cli", "serve", "--config", str(cfg)],
            stdout=subprocess.DEVNULL, stderr=self.err,
            start_new_session=True,
        )  # fmt: skip
        wait_port(self.port, timeout=60.0)

    def processed(self) -> int:
        db = sqlite3.connect(f"file:{self.dir}/data/mailgate.sqlite?mode=ro", uri=True, timeout=30)
        try:
            q = "SELECT COUNT(*) FROM messages WHERE state != 'spooled'"
            return int(db.execute(q).fetchone()[0])
        finally:
            db.close()

    def done(self) -> int:
        return Receiver.count if self.hook else self.processed()

    def cpu(self) -> tuple[float, float]:
        return cpu_seconds(self.p.pid), sum(cpu_seconds(c) for c in children(self.p.pid))

    def run(self, size: int, n: int, s: int) -> dict[str, Any]:
        before = self.done()
        front0, worker0 = self.cpu()
        t0 = time.perf_counter()
        accepted = n / smtp_source(self.port, size, n, s)
        deadline = time.monotonic() + TIMEOUT
        while self.done() - before < n and time.monotonic() < deadline:
            time.sleep(0.01)
        got = self.done() - before
        elapsed = time.perf_counter() - t0
        front1, worker1 = self.cpu()
        return {
            "accepted": accepted,
            "delivered": got / elapsed,
            "missing": n - got,
            "front_us": (front1 - front0) / n * 1e6,
            "worker_us": (worker1 - worker0) / n * 1e6,
        }

    def stop(self) -> None:
        os.killpg(self.p.pid, signal.SIGTERM)
        self.p.wait(60)
        self.err.close()
        shutil.rmtree(self.dir, ignore_errors=True)


POSTFIX_MAIN = """compatibility_level = 3.6
queue_directory = {d}/spool
data_directory = {d}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.localhost
mydomain = localhost
myorigin = $myhostname
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = example.test
relay_recipient_maps =
transport_maps = inline:{{ example.test=discard: }}
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_peername_lookup = no
disable_dns_lookups = yes
smtp_host_lookup = native
local_recipient_maps =
alias_maps =
alias_database =
biff = no
append_dot_mydomain = no
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
smtpd_banner = $myhostname ESMTP
"""

POSTFIX_MASTER = """127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000    0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Postfix:
    """A private instance in a temp dir; its cleanup daemon fsyncs each queue file before 250."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="side-pfx-"))
        self.port = free_port()
        etc = self.dir / "etc"
        for sub in ("etc", "spool", "data"):
            (self.dir / sub).mkdir()
        (etc / "main.cf").write_text(POSTFIX_MAIN.format(d=self.dir))
        (etc / "master.cf").write_text(POSTFIX_MASTER.format(port=self.port))
        shutil.chown(self.dir / "data", "postfix", "postfix")
        os.chmod(self.dir, 0o755)
        subprocess.run(["postfix", "-c", str(etc), "start"], check=True)
        wait_port(self.port, timeout=60.0)

    def run(self, size: int, n: int, s: int) -> dict[str, Any]:
        return {"accepted": n / smtp_source(self.port, size, n, s)}

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.dir / "etc"), "stop"], check=False)
        time.sleep(1)
        shutil.rmtree(self.dir, ignore_errors=True)


class Haraka:
    CACHE = Path.home() / ".cache" / "mailgate-bench" / "haraka"

    def __init__(self) -> None:
        bin_ = self.CACHE / "node_modules" / ".bin" / "haraka"
        if not bin_.exists():
            self.CACHE.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                ["npm", "install", "--prefix", str(self.CACHE), "Haraka@3.3.4"],
                check=True, stdout=subprocess.DEVNULL, timeout=600,
            )  # fmt: skip
        self.dir = Path(tempfile.mkdtemp(prefix="side-haraka-"))
        hk = self.dir / "hk"
        subprocess.run([str(bin_), "-i", str(hk)], check=True, stdout=subprocess.DEVNULL)
        for sub in ("config", "plugins"):
            for f in (HERE / "haraka" / sub).iterdir():
                shutil.copy(f, hk / sub / f.name)
        self.port = free_port()
        (hk / "config" / "smtp.ini").write_text(
            f"listen=127.0.0.1:{self.port}\npublic_ip=127.0.0.1\nnodes=0\ninactivity_timeout=60\n"
        )
        (self.dir / "tmp").mkdir()
        env = dict(os.environ, YES_REALLY_DO_DISCARD="1", TMPDIR=str(self.dir / "tmp"))
        self.p = subprocess.Popen(
            [str(bin_), "-c", str(hk)], env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        wait_port(self.port, timeout=60.0)

    def run(self, size: int, n: int, s: int) -> dict[str, Any]:
        return {"accepted": n / smtp_source(self.port, size, n, s)}

    def stop(self) -> None:
        os.killpg(self.p.pid, signal.SIGTERM)
        self.p.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


CELLS = {"4k1": (4096, 1), "4k20": (4096, 20), "100k1": (102400, 1), "100k20": (102400, 20)}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--servers", default="mailgate,postfix,haraka,bare")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n4", type=int, default=2000)
    ap.add_argument("--n100", type=int, default=800)
    ap.add_argument("--cells", default=",".join(CELLS))
    ap.add_argument("--mailgate-python", default=sys.executable)
    ap.add_argument(
        "--uvloop-python",
        default="",
        help="interpreter with mailgate and uvloop (for mailgate_uvloop; e.g. a venv made with"
        " --system-site-packages plus `pip install uvloop`)",
    )
    args = ap.parse_args()
    recv_port = free_port()
    recv = ThreadingHTTPServer(("127.0.0.1", recv_port), Receiver)
    threading.Thread(target=recv.serve_forever, daemon=True).start()
    py = args.mailgate_python
    make: dict[str, Callable[[], Any]] = {
        "bare": lambda: Bare(py),
        "mailgate": lambda: Mailgate(py, recv_port),
        "mailgate_normal": lambda: Mailgate(py, recv_port, extra='durability = "normal"\n'),
        "mailgate_fsync": lambda: Mailgate(py, recv_port, extra='durability = "fsync"\n'),
        "mailgate_w1": lambda: Mailgate(py, recv_port, extra="[ingest]\nworkers = 1\n"),
        "mailgate_w2": lambda: Mailgate(
            py, recv_port, extra="[ingest]\nworkers = 2\nbacklog_per_worker = 0\n"
        ),
        "mailgate_uvloop": lambda: Mailgate(args.uvloop_python or py, recv_port),
        "mailgate_nohook": lambda: Mailgate(py, recv_port, hook=False),
        "postfix": Postfix,
        "haraka": Haraka,
    }
    servers: dict[str, Any] = {}
    rows = []
    try:
        for name in args.servers.split(","):
            servers[name] = make[name]()
        for cell in args.cells.split(","):
            size, sessions = CELLS[cell]
            n = args.n4 if size == 4096 else args.n100
            runs: dict[str, list[dict[str, Any]]] = {k: [] for k in servers}
            for _ in range(args.rounds):
                for name, srv in servers.items():
                    runs[name].append(srv.run(size, n, sessions))
            row: dict[str, Any] = {"cell": cell, "n": n}
            for name, rs in runs.items():
                row[name] = round(statistics.median(r["accepted"] for r in rs))
                for key in ("delivered", "front_us", "worker_us"):
                    if key in rs[0]:
                        row[f"{name}_{key}"] = round(statistics.median(r[key] for r in rs))
                if "missing" in rs[0]:
                    row[f"{name}_missing"] = sum(r["missing"] for r in rs)
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        for srv in servers.values():
            try:
                srv.stop()
            except Exception as exc:  # keep stopping the others
                print(f"stop failed: {exc}", file=sys.stderr)
    print_table(rows, list(servers))


def print_table(rows: list[dict[str, Any]], names: list[str]) -> None:
    """A markdown table: msgs/s, ratios to Postfix where Postfix ran, CPU µs/msg."""
    ref = "postfix" if "postfix" in names else None
    head = ["cell"]
    for name in names:
        head.append(name)
        if name.startswith("mailgate"):
            head += [f"{name} delivered", "front µs", "worker µs"]
    if ref:
        head += [f"{n} / postfix" for n in names if n.startswith("mailgate")]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        cells = [row["cell"]]
        for name in names:
            cells.append(str(row[name]))
            if name.startswith("mailgate"):
                cells += [str(row[f"{name}_delivered"]), str(row[f"{name}_front_us"]),
                          str(row[f"{name}_worker_us"])]  # fmt: skip
        if ref:
            for name in names:
                if name.startswith("mailgate"):
                    acc = row[name] / row[ref]
                    dlv = row[f"{name}_delivered"] / row[ref]
                    cells.append(f"{acc:.2f}× / {dlv:.2f}×")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
