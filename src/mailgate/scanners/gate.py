"""``check_at = "data"``: the engines asked before the 250, refusing with ``554 5.7.1``.

The Haraka/rmilter pattern: a virus (or spam rspamd says to reject) is refused at the end of
DATA, so the sending server keeps the bounce and mailgate never stores the message. The SMTP
handler calls `DataGate.check` once the message is in and before it spools it; ``None`` lets
it through. Failures follow the engine's ``on_error``: ``defer`` answers ``451 4.7.1`` (the
sender retries later, the message is not taken unscanned), anything else lets the message
through to the worker, whose stage checks it again and records the verdict in the envelope.
"""

from __future__ import annotations

from collections.abc import Sequence

from mailgate import metrics
from mailgate.config import Config
from mailgate.logs import get_logger, log_fields
from mailgate.scanners.base import ScanError
from mailgate.scanners.clamd import SESSIONS, ClamdClient
from mailgate.scanners.rspamd import MessageFacts, RspamdClient

log = get_logger("smtp")

VIRUS = "554 5.7.1 Message refused: a virus was found ({})"
SPAM = "554 5.7.1 Message refused as spam"
TEMPFAIL = "451 4.7.1 Content scanner unavailable, try again later"


class DataGate:
    def __init__(self, cfg: Config) -> None:
        self.av_cfg = cfg.antivirus
        self.spam_cfg = cfg.spam
        self.av = (
            ClamdClient(cfg.antivirus, sessions=SESSIONS)
            if cfg.antivirus.engine == "clamav" and cfg.antivirus.check_at == "data"
            else None
        )
        self.spam = (
            RspamdClient(cfg.spam)
            if cfg.spam.engine == "rspamd" and cfg.spam.check_at == "data"
            else None
        )

    @property
    def active(self) -> bool:
        return self.av is not None or self.spam is not None

    async def check(
        self, raw: bytes, *, ip: str, helo: str, mail_from: str, rcpt_to: Sequence[str]
    ) -> str | None:
        """The SMTP reply refusing the message, or None to accept it."""
        if self.av is not None:
            try:
                verdict = await self.av.scan(raw)
            except ScanError as exc:
                if self.av_cfg.on_error == "defer" and not exc.permanent:
                    return self._refused("scan-tempfail", TEMPFAIL, str(exc))
            else:
                if not verdict.clean:
                    signature = _printable(verdict.signature or "unknown")
                    return self._refused("virus", VIRUS.format(signature), signature)
        if self.spam is not None:
            facts = MessageFacts(client_ip=ip, helo=helo, mail_from=mail_from, rcpt_to=rcpt_to)
            try:
                spam = await self.spam.check(raw, facts)
            except ScanError as exc:
                if self.spam_cfg.on_error == "defer":
                    return self._refused("scan-tempfail", TEMPFAIL, str(exc))
                return None
            limit = self.spam_cfg.reject_at
            if (limit > 0 and spam.score >= limit) or (limit <= 0 and spam.action == "reject"):
                return self._refused("spam", SPAM, f"score {spam.score:g}")
        return None

    @staticmethod
    def _refused(reason: str, reply: str, detail: str) -> str:
        metrics.SMTP_REJECTED.labels(reason=reason).inc()
        log.info("refused at DATA", extra=log_fields(reason=reason, detail=detail[:200]))
        return reply

    async def close(self) -> None:
        if self.av is not None:
            await self.av.close()
        if self.spam is not None:
            await self.spam.close()


def _printable(text: str) -> str:
    return "".join(c for c in text if c.isprintable() and c not in "\r\n")[:100]
