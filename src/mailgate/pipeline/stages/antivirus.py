"""Antivirus: the raw message through ClamAV (clamd), a match holds it as ``virus``.

The raw message goes to clamd whole: clamd decodes MIME, archives (zip, 7z, tar.gz…) and TNEF
itself. When it finds something, each attachment is scanned on its own to name the one that
matched (a message of 20 attachments is held naming ``invoice.zip``, not "somewhere"). The
envelope gets ``antivirus: {engine, clean, signature, error, attachments}``; a virus is a
quarantine candidate ``virus`` placed first (it outranks the ``scan`` heuristics), the
``quarantine`` stage holds the message.

Failure policy (``[antivirus] on_error``, default ``defer``): clamd down, slow or answering
garbage -> the message is retried later, so nothing unscanned is delivered as clean. A message
over clamd's ``StreamMaxLength`` is an error ``too-large`` (retrying cannot help: ``defer``
holds it in quarantine as ``antivirus-error``; ``continue`` delivers it with the error).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from mailgate.config import AntivirusConfig, Config
from mailgate.envelope import Envelope
from mailgate.pipeline.base import Context, Quarantine, Verdict
from mailgate.pipeline.lifecycle import Services
from mailgate.pipeline.scanner_stage import ScannerStage
from mailgate.scanners.base import ScanError, VirusVerdict
from mailgate.scanners.clamd import SESSIONS, ClamdClient
from mailgate.store.base import SpooledMessage

MAX_PARTS = 20
"""Attachments scanned one by one to name the infected one (only after a match)."""


class AntivirusStage(ScannerStage[AntivirusConfig, ClamdClient, VirusVerdict]):
    name = "antivirus"
    description = "ClamAV verdict on the raw message (MIME, archives, TNEF); a virus is held"

    @classmethod
    def build(cls, cfg: Config, services: Services) -> AntivirusStage:
        if cfg.antivirus.engine == "none" or services.raw_message is None:
            return cls(cfg.antivirus)
        client = ClamdClient(cfg.antivirus, sessions=SESSIONS)
        return cls(cfg.antivirus, client, services.raw_message)

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()

    def _ahead_call(
        self, client: ClamdClient, msg: SpooledMessage
    ) -> Callable[[], Awaitable[VirusVerdict]]:
        return functools.partial(client.scan, msg.raw)

    def _call(
        self, client: ClamdClient, raw: bytes, env: Envelope, msg_id: str
    ) -> Awaitable[VirusVerdict]:
        return client.scan(raw)

    def _error_field(self, error: str) -> dict[str, Any]:
        return _field(None, error)

    async def _judge(self, env: Envelope, ctx: Context, verdict: VirusVerdict) -> Verdict | None:
        if verdict.clean:
            env["antivirus"] = _field(None, None)
            ctx.note(f"clean ({verdict.seconds * 1000:.1f} ms)")
            return None
        signature = verdict.signature or "unknown"
        parts = await self._infected_parts(env, ctx)
        field = _field(signature, None)
        field["attachments"] = parts
        env["antivirus"] = field
        where = f" in {', '.join(parts)}" if parts else ""
        ctx.quarantine.insert(0, Quarantine("virus", f"{signature}{where}"))
        ctx.note(f"virus {signature}{where}")
        return None

    async def _infected_parts(self, env: Envelope, ctx: Context) -> list[str]:
        """Names of the attachments clamd flags on their own (best effort: never raises)."""
        assert self.client is not None
        names: list[str] = []
        for att in ctx.view(env).attachments[:MAX_PARTS]:
            sha = att.get("sha256")
            if not isinstance(sha, str) or not sha:
                continue
            try:
                data = await ctx.ports.attachment_bytes(sha)
                if data is None:
                    continue
                verdict = await self.client.scan(data)
            except ScanError:
                continue
            if not verdict.clean:
                names.append(str(att.get("filename") or att.get("id") or sha[:12]))
        return names


def _field(signature: str | None, error: str | None) -> dict[str, Any]:
    return {
        "engine": "clamav",
        "clean": None if error is not None else signature is None,
        "signature": signature,
        "error": error,
    }


STAGE = AntivirusStage(AntivirusConfig())
