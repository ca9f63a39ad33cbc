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
from collections.abc import Sequence
from typing import Any

from mailgate.config import AntivirusConfig, Config, OnError
from mailgate.envelope import Envelope
from mailgate.pipeline.base import Context, Quarantine, Verdict
from mailgate.pipeline.lifecycle import Ahead, RawSource, Services, apply_policy
from mailgate.scanners.base import ScanError, VirusVerdict
from mailgate.scanners.clamd import ClamdClient
from mailgate.store.base import SpooledMessage

MAX_PARTS = 20
"""Attachments scanned one by one to name the infected one (only after a match)."""


class AntivirusStage:
    name = "antivirus"
    description = "ClamAV verdict on the raw message (MIME, archives, TNEF); a virus is held"

    def __init__(
        self,
        cfg: AntivirusConfig,
        client: ClamdClient | None = None,
        raw: RawSource | None = None,
    ) -> None:
        self.cfg = cfg
        self.client = client
        self.raw = raw
        self.on_error: OnError = cfg.on_error
        self.ahead = Ahead()

    @classmethod
    def build(cls, cfg: Config, services: Services) -> AntivirusStage:
        if cfg.antivirus.engine == "none" or services.raw_message is None:
            return cls(cfg.antivirus)
        return cls(cfg.antivirus, ClamdClient(cfg.antivirus), services.raw_message)

    def prefetch(self, batch: Sequence[SpooledMessage]) -> None:
        """Start scanning the claimed batch (see `lifecycle.Ahead`)."""
        client = self.client
        if client is None:
            return
        self.ahead.clear()
        for msg in batch:
            self.ahead.start(msg.id, functools.partial(client.scan, msg.raw))

    async def _scan(self, msg_id: str) -> VirusVerdict:
        assert self.client is not None and self.raw is not None
        started = self.ahead.take(msg_id)
        if started is not None:
            verdict: VirusVerdict = await started
            return verdict
        return await self.client.scan(await self.raw(msg_id))

    async def run(self, env: Envelope, ctx: Context) -> Verdict | None:
        if self.client is None or self.raw is None:
            ctx.note("no antivirus engine configured")
            return None
        try:
            verdict = await self._scan(ctx.msg_id)
        except ScanError as exc:
            env["antivirus"] = _field(None, str(exc))
            return apply_policy(self.on_error, self.name, str(exc), ctx, permanent=exc.permanent)
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
