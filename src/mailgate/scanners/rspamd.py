"""rspamd's ``/checkv2`` HTTP protocol (rspamd.com/doc/developers/protocol.html).

The raw message is POSTed to the normal worker with what the SMTP session knew as request
headers (``IP``, ``Helo``, ``From``, one ``Rcpt`` per recipient, ``Queue-Id``, ``Hostname``),
so rspamd scores the message as the MTA saw it rather than guessing from ``Received`` lines.
Our own SPF/DKIM/DMARC verdicts go along as the ``Authentication-Results`` header mailgate
wrote (prepended to the message, where an MTA puts it); with rspamd's spf/dkim/dmarc modules
off, rspamd neither repeats those DNS lookups nor disagrees with the verdict mailgate stored.

One `aiohttp.ClientSession` (keep-alive pool) per client, opened by `start` and closed by
`close`: the stage's lifecycle holds it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from multidict import CIMultiDict

from mailgate import jsontext
from mailgate.config import SpamConfig
from mailgate.scanners.base import ScanError, SpamSymbol, SpamVerdict, Timer

ENGINE = "rspamd"
MAX_REPLY = 4 * 1024 * 1024


@dataclass(frozen=True)
class MessageFacts:
    """What the SMTP session knew about a message (rspamd's request headers)."""

    client_ip: str = ""
    helo: str = ""
    mail_from: str = ""
    rcpt_to: Sequence[str] = field(default_factory=tuple)
    queue_id: str = ""
    hostname: str = ""
    authentication_results: str = ""

    def headers(self) -> CIMultiDict[str]:
        h: CIMultiDict[str] = CIMultiDict()
        for name, value in (
            ("IP", self.client_ip),
            ("Helo", self.helo),
            ("From", self.mail_from),
            ("Queue-Id", self.queue_id),
        ):
            if value and _safe(value):
                h.add(name, value)
        for rcpt in self.rcpt_to:
            if rcpt and _safe(rcpt):
                h.add("Rcpt", rcpt)
        # rspamd wants a Hostname (the client's rDNS name); "unknown" is its own word for none
        h.add("Hostname", self.hostname if self.hostname and _safe(self.hostname) else "unknown")
        return h


def _safe(value: str) -> bool:
    """No header injection through an SMTP-supplied value."""
    return "\r" not in value and "\n" not in value and len(value) < 1000


class RspamdClient:
    """Checks messages with one rspamd normal worker; see the module docstring."""

    def __init__(self, cfg: SpamConfig) -> None:
        self.cfg = cfg
        self.url = cfg.url.rstrip("/")
        self.timeout = cfg.timeout
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64, force_close=False),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                skip_auto_headers=("User-Agent",),
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, path: str, data: bytes | None, headers: CIMultiDict[str]) -> bytes:
        await self.start()
        assert self._session is not None
        if self.cfg.password:
            headers.add("Password", self.cfg.password)
        try:
            async with self._session.post(self.url + path, data=data, headers=headers) as resp:
                body = await resp.content.read(MAX_REPLY)
                if resp.status != 200:
                    raise ScanError(ENGINE, "protocol", f"HTTP {resp.status} from rspamd")
                return body
        except (aiohttp.ClientConnectionError, OSError) as exc:
            if isinstance(exc, aiohttp.ServerTimeoutError):
                raise ScanError(ENGINE, "timeout", f"no answer within {self.timeout}s") from None
            raise ScanError(ENGINE, "unavailable", f"{type(exc).__name__}: {exc}") from None
        except aiohttp.ClientError as exc:
            raise ScanError(ENGINE, "protocol", f"{type(exc).__name__}: {exc}") from None

    async def check(self, raw: bytes, facts: MessageFacts | None = None) -> SpamVerdict:
        """Score one message under ``timeout``."""
        facts = facts or MessageFacts()
        if facts.authentication_results and _safe(facts.authentication_results):
            raw = (
                b"Authentication-Results: " + facts.authentication_results.encode() + b"\r\n" + raw
            )
        timer = Timer(ENGINE)
        try:
            async with asyncio.timeout(self.timeout):
                body = await self._post("/checkv2", raw, facts.headers())
            verdict = parse_reply(body)
        except TimeoutError:
            timer.done("error")
            raise ScanError(ENGINE, "timeout", f"no answer within {self.timeout}s") from None
        except ScanError:
            timer.done("error")
            raise
        outcome = "spam" if verdict.action in SPAM_ACTIONS else "ham"
        return SpamVerdict(
            verdict.score, verdict.required, verdict.action, verdict.symbols, timer.done(outcome)
        )

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout):
                await self.start()
                assert self._session is not None
                async with self._session.get(self.url + "/ping") as resp:
                    return resp.status == 200 and (await resp.read()).strip() == b"pong"
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False


SPAM_ACTIONS = frozenset({"reject", "rewrite subject", "add header"})
"""rspamd actions that mean "this is spam" (``greylist``/``soft reject`` mean "not sure yet")."""


def parse_reply(body: bytes) -> SpamVerdict:
    """A ``/checkv2`` JSON answer -> verdict; anything malformed is a ``protocol`` error."""
    try:
        data = jsontext.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ScanError(ENGINE, "protocol", "answer is not JSON") from None
    if not isinstance(data, dict):
        raise ScanError(ENGINE, "protocol", "answer is not a JSON object")
    if "error" in data and "score" not in data:
        raise ScanError(ENGINE, "protocol", f"rspamd error: {str(data['error'])[:200]}")
    score = _number(data.get("score"))
    action = data.get("action")
    if score is None or not isinstance(action, str):
        raise ScanError(ENGINE, "protocol", "answer lacks score or action")
    required = _number(data.get("required_score"))
    symbols: list[SpamSymbol] = []
    raw_symbols = data.get("symbols")
    if isinstance(raw_symbols, dict):
        for name, sym in raw_symbols.items():
            if not isinstance(sym, dict):
                continue
            description = sym.get("description")
            symbols.append(
                SpamSymbol(
                    str(sym.get("name") or name),
                    _number(sym.get("score")) or 0.0,
                    description if isinstance(description, str) else "",
                )
            )
    symbols.sort(key=lambda s: (-abs(s.score), s.name))
    return SpamVerdict(score, required if required is not None else 0.0, action, tuple(symbols))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
