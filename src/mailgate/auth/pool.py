"""DKIM and ARC verification in worker processes, with their key records fetched beforehand.

Owns: the process pool (``auth.verify_processes``), the list of key names a message will need
(``s._domainkey.d`` of every DKIM-Signature, ARC-Message-Signature and ARC-Seal), and the
prefetch-then-verify round trip.

Why processes: dkimpy canonicalizes and parses in pure Python, so verifying in a thread still
holds the GIL the SMTP event loop needs, and verifying inline adds its CPU time to every
session's latency. In a worker process it runs on another core and the loop only awaits.

How DNS stays in the one resolver: the SMTP process resolves the key names first (async, through
the shared cache), then ships the message and those records to a worker, whose ``dnsfunc``
(:class:`StaticKeys`) answers only from them; a worker never touches the network, so a job is
pure CPU and always finishes. A name the scan did not predict (dkimpy asked for something else)
comes back as a miss; it is resolved and the job re-run, a bounded number of times.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from dkim.util import InvalidTagValueList, parse_tag_value

from mailgate.auth.arc import verify_arc_sync
from mailgate.auth.dkim import verify_dkim_sync
from mailgate.auth.dns import CacheMiss, DnsTempError, Resolver, normalize_name, pick_key_record
from mailgate.envelope import AuthResult

log = logging.getLogger("mailgate.auth")

MAX_ROUNDS = 4
# Records shipped to a worker: name -> the joined TXT strings, or a str (a temperror reason).
KeyRecords = dict[str, "list[bytes] | str"]

_SIGNING_FIELD = re.compile(
    rb"^(?:dkim-signature|arc-message-signature|arc-seal)[ \t]*:(.*(?:\r?\n[ \t].*)*)",
    re.IGNORECASE | re.MULTILINE,
)


def key_names(raw: bytes) -> list[str]:
    """The key record names the message's signatures and seals point at, in order."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        end = raw.find(b"\n\n")
    head = raw if end < 0 else raw[:end]
    names: list[str] = []
    for m in _SIGNING_FIELD.finditer(head):
        try:
            tags = parse_tag_value(re.sub(rb"\r?\n(?=[ \t])", b"", m.group(1)))
        except InvalidTagValueList:
            continue
        d, s = tags.get(b"d"), tags.get(b"s")
        if d and s:
            name = normalize_name(b"".join(s.split()) + b"._domainkey." + b"".join(d.split()))
            if name not in names:
                names.append(name)
    return names


class StaticKeys:
    """A dkimpy ``dnsfunc`` over records fetched beforehand (see module docstring)."""

    def __init__(self, records: KeyRecords) -> None:
        self.records = records
        self.missing: str | None = None

    def dkim_txt(self, name: bytes | str, timeout: float = 5) -> bytes | None:
        key = normalize_name(name)
        if key not in self.records:
            self.missing = key
            raise CacheMiss(key)
        value = self.records[key]
        if isinstance(value, str):
            raise DnsTempError(value)
        return pick_key_record(value)


def verify_job(raw: bytes, from_domain: str | None, records: KeyRecords) -> tuple[str, Any]:
    """Runs in a worker: ``("ok", (dkim, arc))`` or ``("miss", key_name)``."""
    keys = StaticKeys(records)
    try:
        result = (verify_dkim_sync(raw, keys, from_domain), verify_arc_sync(raw, keys))
    except CacheMiss:
        pass
    else:
        if keys.missing is None:
            return "ok", result
    return "miss", keys.missing


def _warm() -> bool:
    return True


async def fetch_keys(resolver: Resolver, names: list[str], records: KeyRecords) -> None:
    """Resolve ``names`` (CNAMEs followed) into ``records``; DNS trouble is recorded, not raised."""

    async def one(name: str) -> None:
        try:
            records[name] = await resolver.txt(name)
        except DnsTempError as exc:
            records[name] = str(exc)

    todo = [n for n in names if n not in records]
    if len(todo) == 1:
        await one(todo[0])
    elif todo:
        await asyncio.gather(*(one(n) for n in todo))


class PoolUnavailable(Exception):
    """The pool could not run the job (broken or too many misses): verify in process instead."""


class VerifyPool:
    """A lazily started pool of ``processes`` verification workers."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn: never fork the SMTP process (its threads may hold locks at fork time).
            self._pool = ProcessPoolExecutor(
                max_workers=self.processes, mp_context=multiprocessing.get_context("spawn")
            )
        return self._pool

    def warm(self) -> None:
        """Start the workers now (they take a moment to import) rather than on first use."""
        if self._pool is None:
            try:
                self._executor().submit(_warm)
            except RuntimeError:
                self._pool = None

    async def verify(
        self, raw: bytes, from_domain: str | None, resolver: Resolver
    ) -> tuple[AuthResult, AuthResult]:
        """(dkim, arc) for ``raw``. Raises :class:`PoolUnavailable` to ask for the fallback."""
        records: KeyRecords = {}
        names = key_names(raw)
        loop = asyncio.get_running_loop()
        for _ in range(MAX_ROUNDS):
            await fetch_keys(resolver, names, records)
            try:
                status, payload = await loop.run_in_executor(
                    self._executor(), verify_job, raw, from_domain, records
                )
            except (RuntimeError, OSError, EOFError) as exc:  # BrokenProcessPool is a RuntimeError
                self.reset()
                raise PoolUnavailable(f"verification pool failed: {exc}") from exc
            if status == "ok":
                dkim_result, arc_result = payload
                return dkim_result, arc_result
            names = [str(payload)]
        raise PoolUnavailable("key names kept changing")

    def reset(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        self.reset()
