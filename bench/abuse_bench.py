"""Abuse benchmark: a legitimate sender's acceptance and latency while the MX is under attack.

Starts ``mailgate serve`` (the default [smtp] connection economics unless ``--quick``) and, in
the same run, measures one legitimate sender (one message per connection, the MX case):

* idle: nothing else going on (the reference);
* slowloris: ``--networks`` × ``--hosts`` addresses × ``--per-host`` connections that reach
  DATA and send one byte every ``--every`` seconds, reconnecting whenever they are cut;
* flood: as many connect-and-hold connections (banner, then silence), plus connect-and-close
  loops from the same networks.

Two senders are measured in each phase: a *known* sender (127.0.0.1, which delivered before:
a clean history) and *new* senders (a fresh 127.0.200.x address per message: no history, so
each pays the greet delay and has no reserved slot). Ratios are to the idle figures.

    python bench/abuse_bench.py               # production defaults; ~3 minutes
    python bench/abuse_bench.py --quick       # short deadlines (data 10s, grace 3s); ~1 minute

Attackers bind 127.N.0.H (all of 127/8 is loopback on Linux). Loopback only; every phase is
bounded by a count and a timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.abuse import (  # noqa: E402
    AttackStats,
    AttackThread,
    SendResult,
    attacker_sources,
    flood,
    raise_fd_limit,
    send_messages,
    send_one,
    slowloris,
)

QUICK_SMTP = 'data_timeout = "10s"\nmin_data_rate_grace = "3s"\nsession_timeout = "20s"\nidle_timeout = "15s"\n'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, smtp_extra: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mailgate-abuse-"))
        self.port = free_port()
        cfg = self.dir / "mailgate.toml"
        cfg.write_text(
            f'[smtp]\nlisten = "127.0.0.1:{self.port}"\nhostname = "mx.bench"\n{smtp_extra}'
            f'[store]\ndata_dir = "{self.dir / "data"}"\n'
            '[[domains]]\nname = "example.test"\nmailboxes = ["support"]\n'
            "[auth]\nenabled = false\n[api]\nenabled = false\n[ingest]\nworkers = 1\n"
            '[log]\nlevel = "warning"\n'
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailgate.cli", "serve", "--config", str(cfg)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                    if s.makefile("rb").readline().startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("mailgate serve did not start")

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


def senders(port: int, count: int, pause: float, new_from: int) -> tuple[SendResult, SendResult]:
    known = send_messages("127.0.0.1", port, count, ["127.0.0.1"], pause)
    fresh = [f"127.0.200.{new_from + i}" for i in range(count)]
    new = send_messages("127.0.0.1", port, count, fresh, pause)
    return known, new


def phase(
    port: int, attack: str, args: argparse.Namespace, new_from: int
) -> tuple[SendResult, SendResult, AttackStats]:
    stats = AttackStats()
    thread = AttackThread()
    sources = attacker_sources(args.networks, args.hosts)
    host = "127.0.0.1"
    if attack == "slowloris":
        thread.start(
            lambda stop: slowloris(host, port, sources, args.per_host, args.every, stop, stats)
        )
    elif attack == "flood":
        closers = attacker_sources(args.networks, 1, first=100)
        thread.start(
            lambda stop: flood(host, port, sources, args.per_host, True, stop, stats),
            lambda stop: flood(host, port, closers, 4, False, stop, stats),
        )
    try:
        if attack != "idle":
            time.sleep(args.ramp)  # let the attack take its slots first
        known, new = senders(port, args.count, args.pause, new_from)
    finally:
        thread.stop(timeout=60)
    return known, new, stats


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="short deadlines, fewer messages")
    ap.add_argument("--count", type=int, default=None, help="messages per sender and phase")
    ap.add_argument("--pause", type=float, default=None, help="seconds between messages")
    ap.add_argument("--networks", type=int, default=12, help="attacker /24 networks")
    ap.add_argument("--hosts", type=int, default=4, help="attacker addresses per network")
    ap.add_argument("--per-host", type=int, default=11, help="attack connections per address")
    ap.add_argument("--every", type=float, default=5.0, help="slowloris: seconds per byte")
    ap.add_argument("--ramp", type=float, default=5.0, help="attack seconds before measuring")
    args = ap.parse_args()
    if args.count is None:
        args.count = 40 if args.quick else 60
    if args.pause is None:
        args.pause = 0.1 if args.quick else 0.3
    raise_fd_limit(8192)
    server = Server(QUICK_SMTP if args.quick else "")
    rows: dict[str, tuple[SendResult, SendResult, AttackStats]] = {}
    try:
        ok, _, why = send_one("127.0.0.1", server.port, "127.0.0.1")  # the known sender's history
        assert ok, why
        for i, attack in enumerate(("idle", "slowloris", "flood")):
            rows[attack] = phase(server.port, attack, args, new_from=1 + i * args.count)
            time.sleep(2.0)  # the server closes what the attack left behind
    finally:
        server.stop()

    conns = args.networks * args.hosts * args.per_host
    print(
        f"\nattack: {conns} connections from {args.networks * args.hosts} addresses in "
        f"{args.networks} networks; {args.count} messages per sender and phase"
        f"{' (quick: short deadlines)' if args.quick else ' (default [smtp] settings)'}\n"
    )
    print(
        f"{'phase':<10} {'sender':<6} {'accepted':>9} {'ratio':>6} {'p95 ms':>8} {'ratio':>6}"
        f"   attack: peak open / in DATA / cut 421 4.4.2 / refused"
    )
    out = []
    for attack, (known, new, stats) in rows.items():
        for name, res, idle in (("known", known, rows["idle"][0]), ("new", new, rows["idle"][1])):
            ratio = res.ratio / idle.ratio if idle.ratio else float("nan")
            p95_ratio = res.p95 / idle.p95 if idle.latencies else float("nan")
            cuts = sum(1 for reply, _ in stats.cuts if reply.startswith(b"421 4.4.2"))
            tail = (
                f"   {stats.peak_open} / {stats.peak_in_data} / {cuts} / {stats.refused}"
                if name == "known" and attack != "idle"
                else ""
            )
            print(
                f"{attack:<10} {name:<6} {res.accepted:>4}/{res.total:<4} {ratio:>6.2f} "
                f"{res.p95 * 1000:>8.1f} {p95_ratio:>6.2f}{tail}",
                flush=True,
            )
            out.append(
                {
                    "phase": attack,
                    "sender": name,
                    "accepted": res.accepted,
                    "total": res.total,
                    "ratio_to_idle": round(ratio, 3),
                    "p95_ms": round(res.p95 * 1000, 1),
                    "p95_ratio_to_idle": round(p95_ratio, 2),
                    "failures": sorted(set(res.failures))[:3],
                }
            )
        if attack != "idle":
            slowest = max((after for _, after in stats.cuts), default=0.0)
            out.append(
                {
                    "phase": attack,
                    "attack_attempts": stats.attempts,
                    "peak_open": stats.peak_open,
                    "peak_in_data": stats.peak_in_data,
                    "cuts": len(stats.cuts),
                    "slowest_cut_s": round(slowest, 1),
                    "refused": stats.refused,
                }
            )
    print(json.dumps({"quick": args.quick, "results": out}, indent=2))


if __name__ == "__main__":
    main()
