"""Readiness of the configured engines, for ``/readyz``.

The API runs in the front process, the stages in the workers, so readiness is probed here
rather than read from the stages: clamd ``PING``, rspamd ``GET /ping``. An engine is reported
not ready once it has failed every probe for longer than its ``unready_after`` (a restart of
clamd, a few seconds, does not flap the check); its outage start is kept between probes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Protocol

from mailgate.config import Config
from mailgate.scanners.clamd import ClamdClient
from mailgate.scanners.rspamd import RspamdClient


class _Pingable(Protocol):
    async def ping(self) -> bool: ...


@dataclass
class _Engine:
    name: str
    client: _Pingable
    unready_after: float
    down_since: float | None = None


class EngineWatch:
    """Probes each configured engine; `checks` is the ``/readyz`` fragment."""

    def __init__(self, cfg: Config) -> None:
        self.engines: list[_Engine] = []
        if cfg.antivirus.engine == "clamav":
            self.engines.append(
                _Engine("clamav", ClamdClient(cfg.antivirus), cfg.antivirus.unready_after)
            )
        if cfg.spam.engine == "rspamd":
            self.engines.append(_Engine("rspamd", RspamdClient(cfg.spam), cfg.spam.unready_after))

    async def checks(self) -> tuple[bool, dict[str, Any]]:
        """(all ready, ``{"scan:<engine>": {...}}``) after probing every engine concurrently."""
        if not self.engines:
            return True, {}
        results = await asyncio.gather(*(e.client.ping() for e in self.engines))
        now = time.monotonic()
        ok_all = True
        out: dict[str, Any] = {}
        for engine, up in zip(self.engines, results, strict=True):
            if up:
                engine.down_since = None
            elif engine.down_since is None:
                engine.down_since = now
            down_for = 0.0 if engine.down_since is None else now - engine.down_since
            ready = up or down_for < engine.unready_after
            ok_all &= ready
            out[f"scan:{engine.name}"] = {
                "ok": ready,
                "up": up,
                "down_seconds": round(down_for, 3),
                "max_seconds": engine.unready_after,
            }
        return ok_all, out

    async def close(self) -> None:
        for engine in self.engines:
            if isinstance(engine.client, RspamdClient):
                await engine.client.close()
