"""The SMTP listener: TLS context, the session factory, graceful shutdown.

``SmtpServer.start`` binds the configured address (a taken port is a clear startup error);
``stop`` stops accepting, lets in-flight sessions finish within the grace period, then closes
what is left — a session cut off before its 250 never had its message acknowledged.
"""

from __future__ import annotations

import asyncio
import ssl
import time

from mailgate.config import SmtpConfig
from mailgate.logs import get_logger
from mailgate.smtp import replies
from mailgate.smtp.connections import ConnectionCounter, ConnectionLimits, PeerHistory
from mailgate.smtp.handler import SmtpHandler
from mailgate.smtp.session import SessionSettings, SmtpSession

log = get_logger("smtp")


class StartupError(RuntimeError):
    """The listener cannot start (port taken, bad TLS files)."""


def tls_context(cfg: SmtpConfig) -> ssl.SSLContext | None:
    if not (cfg.tls_cert and cfg.tls_key):
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(f"smtp.tls_cert/tls_key: cannot load {cfg.tls_cert}: {exc}") from exc
    return ctx


class SmtpServer:
    def __init__(self, cfg: SmtpConfig, handler: SmtpHandler) -> None:
        # Shared by every session and kept across reloads: the counts and the history are
        # facts about clients, only the limits they are compared with come from the config.
        self.connections = ConnectionCounter()
        self.history = PeerHistory(cfg.history_ttl)
        self._server: asyncio.base_events.Server | None = None
        self._protocols: set[SmtpSession] = set()
        self._install(cfg, handler, tls_context(cfg))

    def _install(self, cfg: SmtpConfig, handler: SmtpHandler, tls: ssl.SSLContext | None) -> None:
        """Make ``cfg``/``handler``/``tls`` what the *next* session is built with.

        A session keeps the ``SessionSettings`` it was created with, so replacing them here
        never changes a session already in progress.
        """
        self.cfg = cfg
        self.handler = handler
        self._tls = tls
        self.history.ttl = cfg.history_ttl
        self._settings = SessionSettings(
            cfg=cfg,
            handler=handler,
            tls=tls,
            limits=ConnectionLimits.from_config(cfg),
            connections=self.connections,
            history=self.history,
        )

    def reload(self, cfg: SmtpConfig, handler: SmtpHandler) -> None:
        """New sessions use ``cfg``, ``handler`` and a freshly loaded TLS cert/key; sessions in
        progress finish with what they started with.

        The TLS files are loaded first: if that fails, ``StartupError`` is raised and nothing
        changes (the old context keeps serving). The listening socket is not rebound: a
        changed ``listen`` needs a restart (logged).
        """
        tls = tls_context(cfg)
        if cfg.listen != self.cfg.listen and self._server is not None:
            log.warning(
                "smtp.listen changed; restart to rebind",
                extra={
                    "fields": {"old": self.cfg.listen, "new": cfg.listen, "error": "restart needed"}
                },
            )
        self._install(cfg, handler, tls)
        log.info("reloaded", extra={"fields": {"tls": bool(tls)}})

    def _factory(self) -> SmtpSession:
        return SmtpSession(
            self._settings, on_open=self._protocols.add, on_close=self._protocols.discard
        )

    async def start(self) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        host, port = self.cfg.host, self.cfg.port
        try:
            self._server = await loop.create_server(
                self._factory, host=host, port=port, reuse_address=True, backlog=512
            )
        except OSError as exc:
            raise StartupError(
                f"smtp.listen = {self.cfg.listen!r}: cannot listen: {exc.strerror or exc}"
            ) from exc
        sock = self._server.sockets[0].getsockname()
        log.info(
            "listening",
            extra={"fields": {"address": f"{sock[0]}:{sock[1]}", "tls": bool(self._tls)}},
        )
        return str(sock[0]), int(sock[1])

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting; close idle sessions now (421), let transactions finish within ``grace``."""
        if self._server is None:
            return
        grace = self.cfg.shutdown_grace if grace is None else grace
        self._server.close()
        deadline = time.monotonic() + grace
        while self._protocols:
            for proto in list(self._protocols):
                if _idle(proto) or time.monotonic() >= deadline:
                    _close_with_421(proto)
                    self._protocols.discard(proto)
            if not self._protocols:
                break
            await asyncio.sleep(0.05)
        self._server = None
        log.info("stopped")


def _idle(proto: SmtpSession) -> bool:
    """No transaction in progress: nothing would be lost by closing now."""
    return not proto.in_transaction


def _close_with_421(proto: SmtpSession) -> None:
    proto.cut(replies.SHUTTING_DOWN, None)
