"""Entry point of a worker process: ``python -m mailgate.worker --index I --count N``.

Started by ``mailgate serve`` (see ``app.py``); not meant to be run by hand.
"""

from __future__ import annotations

import argparse
import os
import sys

from mailgate.app import load_config, run_async, run_worker
from mailgate.config import ConfigError
from mailgate.logs import setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mailgate.worker")
    parser.add_argument("--config", default=None)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--notify-fd", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"mailgate worker: {exc}", file=sys.stderr)
        return 2
    setup_logging(cfg.log.level, cfg.log.format)
    if cfg.ingest.worker_nice:
        # the listener first when cores are short: a sender waits on it, processing can lag
        os.nice(cfg.ingest.worker_nice)
    run_async(run_worker(cfg, args.index, args.count, args.notify_fd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
