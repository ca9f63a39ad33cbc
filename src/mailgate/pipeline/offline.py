"""Run the pipeline on a loose ``.eml`` file, storing nothing (``rules test``, ``rules eval``).

The file is parsed as the ingest worker would parse a spooled message; what the SMTP session
would have known is taken from the file: the sender from ``Return-Path`` (a ``<>`` there is a
null sender; without one, the From address), the recipients from To/Cc addresses in our domains (or the ``rcpt`` given), the
tenant from the first of those, as the SMTP side assigns it. Attachment bytes stay in memory so
the scan can look into them. No authentication checks run (the file has no SMTP session);
``auth`` fields are taken from ``auth`` when given.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from mailgate.config import Config
from mailgate.envelope import Envelope, new_id, utc_now_iso
from mailgate.envelope_view import EnvView, emails
from mailgate.pipeline.runner import EmptyPorts, Outcome, PipelineRunner


class MemoryPorts(EmptyPorts):
    """No stored mail; attachment bytes of the file being tested, kept in memory."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        self.blobs[digest] = data
        return digest

    async def attachment_bytes(self, sha256: str) -> bytes | None:
        return self.blobs.get(sha256)


def _tenant_and_recipients(cfg: Config, candidates: Sequence[str]) -> tuple[str | None, list[str]]:
    from mailgate.recipients import Accepted, RecipientPolicy

    policy = RecipientPolicy(cfg.domains)
    ours: list[str] = []
    tenant: str | None = None
    for addr in candidates:
        verdict = policy.check(addr)
        if isinstance(verdict, Accepted):
            ours.append(addr)
            tenant = tenant or verdict.tenant
    return tenant, ours


def envelope_from_bytes(
    raw: bytes,
    cfg: Config,
    *,
    rcpt: Sequence[str] = (),
    tenant: str | None = None,
    auth: dict[str, Any] | None = None,
    ports: MemoryPorts | None = None,
) -> tuple[Envelope, MemoryPorts]:
    """The envelope the ingest worker would build for ``raw``, and ports holding its blobs."""
    from mailgate.mime.parse import configured_parser

    ports = ports or MemoryPorts()
    parse_message = configured_parser(cfg.mime.max_nesting, cfg.mime.remote_images)
    parsed = parse_message(raw, blob_sink=ports.put)
    env: Envelope = {"id": new_id("msg"), "timestamp": utc_now_iso(), "traceId": ""}
    env.update(parsed)
    view = EnvView(env)
    return_path = view.first_header("Return-Path")
    # Without a Return-Path the SMTP sender is unknown: None, never a null sender.
    mail_from = (
        return_path.strip().strip("<>").strip() if return_path is not None else view.sender or None
    )
    addressed = [*emails(env.get("to")), *emails(env.get("cc"))]
    found_tenant, ours = _tenant_and_recipients(cfg, list(rcpt) or addressed)
    env["tenant"] = tenant or found_tenant or "default"
    env["envelope"] = {
        "mailFrom": mail_from,
        "rcptTo": list(rcpt) or ours or addressed,
        "clientIp": "",
        "helo": "",
        "tls": False,
    }
    auth = auth or {}
    for key in ("spf", "dkim", "dmarc", "arc", "authenticationResults", "authAction"):
        env[key] = auth.get(key)
    return env, ports


async def run_file(
    raw: bytes,
    cfg: Config,
    *,
    rcpt: Sequence[str] = (),
    tenant: str | None = None,
    runner: PipelineRunner | None = None,
) -> tuple[Envelope, Outcome]:
    """Parse and run the pipeline in ``dry-run`` mode; nothing is stored or sent."""
    env, ports = envelope_from_bytes(raw, cfg, rcpt=rcpt, tenant=tenant)
    runner = runner or PipelineRunner(cfg, ports)
    runner.ports = ports
    outcome = await runner.process(env, mode="dry-run")
    return env, outcome
