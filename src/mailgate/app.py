"""Composition root: builds the store, checkers, pipeline, listener, API and workers; lifecycle.

The only module that names concrete backends. Two process roles:

* the **front** (``mailgate serve``): SMTP listener and HTTP API. It spools and says 250;
* the **worker** (``ingest.workers`` child processes, or inline when ``workers = 0``):
  ingest + pipeline, webhook delivery and auto-reply sending.

The front wakes workers through a pipe after each spool commit, so a message is processed
within milliseconds without polling; workers also poll, so nothing depends on the pipe.
Splitting the roles lets parsing use the second core while the front keeps accepting.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailgate import config
from mailgate.config import Config, ConfigError, ConfigErrors, Validator, config_warnings
from mailgate.logs import get_logger
from mailgate.pipeline.ingest import IngestWorker
from mailgate.recipients import RecipientPolicy
from mailgate.runlock import DataDirLock, DataDirLocked
from mailgate.smtp.handler import SmtpHandler
from mailgate.smtp.server import SmtpServer, StartupError
from mailgate.store import sqlite_backup as backups
from mailgate.store.base import NotFound
from mailgate.store.blobs import BlobStore
from mailgate.store.check import CheckReport, check_blob_files
from mailgate.store.crypto import codec_for, codec_of
from mailgate.store.governance import erasure_targets
from mailgate.store.notify import SPOOL
from mailgate.store.ports import Store
from mailgate.store.private import make_private_dirs, write_private_file
from mailgate.store.retention import Purger, enabled
from mailgate.store.sqlite import DB_NAME, SqliteStore
from mailgate.store.sqlite_governance import SqliteGovernance
from mailgate.store.sqlite_governance import governance_for as sqlite_governance_for

if TYPE_CHECKING:
    from mailgate.store.postgres.retention import PgGovernance

log = get_logger("app")

__all__ = [
    "Front",
    "StartupError",
    "WorkerRuntime",
    "backups",  # the CLI's way to backup, restore and db check (SQLite, issue 15)
    "build_store",
    "check_data_dir",
    "governance_for",  # the CLI's way to the governance operations (issue 15)
]


def config_validators() -> list[Validator]:
    """Every subsystem's check of the config it owns; ``load_config`` runs them all."""
    from mailgate.delivery import settings as delivery_settings
    from mailgate.pipeline import runner

    # runner.validate also runs reply.settings.validate, with the templates the rules name
    return [runner.validate, delivery_settings.validate]


def load_config(
    path: str | os.PathLike[str] | None = None, *, env: dict[str, str] | None = None
) -> Config:
    """The config, checked by the core and by every subsystem (all errors reported at once)."""
    return config.load_config(path, env=env, validators=config_validators())


def governance_for(
    store: object, data_dir: Path | None = None
) -> SqliteGovernance | PgGovernance | None:
    """The governance operations (erasure, retention purge) of ``store``, whichever backend
    (issue 15); ``data_dir``: the node's data dir (on PostgreSQL, its attachment cache)."""
    governance = sqlite_governance_for(store)
    if governance is not None:
        return governance
    from mailgate.store.postgres import PostgresStore
    from mailgate.store.postgres.retention import PgGovernance

    if isinstance(store, PostgresStore):
        return PgGovernance(store, Path(data_dir) if data_dir is not None else Path("."))
    return None


def build_purger(cfg: Config, store: object) -> Purger | None:
    """The retention purger for ``serve``'s first worker; None when nothing expires."""
    governance = governance_for(store, Path(cfg.store.data_dir))
    if governance is None or not enabled(cfg.retention):
        return None
    return Purger(governance, cfg.retention)


def build_store(cfg: Config, *, worker: bool = False) -> Store:
    """The configured backend: the one place that names one (``[store] backend``).

    ``worker``: for an ingest worker process, whose SQLite writes commit on its event loop
    (``Writer(inline=True)``) instead of handing each batch to a writer thread and back."""
    if cfg.store.backend == "postgresql":
        from mailgate.store.postgres import PostgresStore

        return PostgresStore(
            cfg.store.dsn,
            node=cfg.store.node,
            migrate=cfg.store.migrate,
            max_batch=cfg.store.max_batch,
        )
    store = SqliteStore(
        cfg.store.data_dir,
        durability=cfg.store.durability,
        group_commit_window=cfg.store.group_commit_window,
        max_batch=cfg.store.max_batch,
        migrate=cfg.store.migrate,
        inline_writer=worker,
    )
    store.codec = codec_for(cfg)  # encryption at rest when a key is configured (issue 15)
    return store


def check_store(cfg: Config) -> CheckReport:
    """``mailgate db check`` for the configured backend (see ``store.check``)."""
    if cfg.store.backend != "postgresql":
        return backups.check(Path(cfg.store.data_dir), codec_for(cfg))
    return asyncio.run(_check_postgres(cfg))


async def _check_postgres(cfg: Config) -> CheckReport:
    """The schema, every raw message, every attachment re-derived from its raw message (the
    source of truth on PostgreSQL), and the node's local blob cache if it has one."""
    from mailgate.mime.parse import configured_parser
    from mailgate.store.postgres import PostgresStore

    report = CheckReport()
    # a check never migrates: an old schema is a finding
    store = build_store(
        dataclasses.replace(cfg, store=dataclasses.replace(cfg.store, migrate=False))
    )
    assert isinstance(store, PostgresStore)
    st = await store.schema_status()
    report.integrity = f"schema {st.current} of {st.latest}"
    if st.pending or st.newer:
        report.problems.append(
            f"schema {st.current}: "
            + ("newer than this mailgate" if st.newer else "pending ")
            + ", ".join(st.pending)
        )
        return report
    parse = configured_parser(cfg.mime.max_nesting, cfg.mime.remote_images)
    async with store:
        named = await store.check_rows(report)
        for msg_id, wanted in sorted(named.items()):
            derived: set[str] = set()

            def sink(data: bytes, into: set[str] = derived) -> str:
                digest = hashlib.sha256(data).hexdigest()
                into.add(digest)
                return digest

            try:
                raw = await store.get_raw(msg_id)
            except NotFound:
                continue  # reported by check_rows
            await asyncio.to_thread(parse, raw, blob_sink=sink)
            for sha in sorted(wanted - derived):
                report.problems.append(
                    f"{msg_id}: attachment {sha[:16]}… not derivable from the raw message"
                )
    check_blob_files(Path(cfg.store.data_dir) / "attachments", report)
    return report


async def with_shared_keys(cfg: Config, store: Store) -> Config:
    """For a store several nodes share: the URL-signing key from the database unless the config
    sets one, so a URL one node signed is good on every node (nothing shared on local disk)."""
    if cfg.store.backend != "postgresql" or cfg.api.url_signing_key:
        return cfg
    from mailgate.store.postgres import PostgresStore

    if not isinstance(store, PostgresStore):
        return cfg
    key = await store.shared_secret("url_signing_key")
    return dataclasses.replace(cfg, api=dataclasses.replace(cfg.api, url_signing_key=key))


def store_exists(cfg: Config) -> bool:
    """Whether the configured store was created (by ``serve`` or ``db migrate``): a CLI command
    run with the wrong config must say so, not create an empty store and report "No messages"."""
    if cfg.store.backend == "postgresql":
        return True  # opening it checks the schema (and says what is missing)
    return (Path(cfg.store.data_dir) / DB_NAME).is_file()


def check_data_dir(cfg: Config) -> None:
    """Refuse to start when the data dir cannot be created or written."""
    path = Path(cfg.store.data_dir)
    try:
        make_private_dirs(path)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise StartupError(
            f"store.data_dir = {str(path)!r}: not writable: {exc.strerror or exc}"
        ) from exc


def build_auth(cfg: Config) -> Any:
    if not cfg.auth.enabled:
        return None
    from mailgate.auth.checker import AuthChecker

    return AuthChecker(cfg.auth, cfg.smtp.hostname)


def auth_needed_before_250(cfg: Config) -> bool:
    """Whether DKIM/ARC/DMARC must finish before the SMTP reply.

    Only when a policy can refuse or defer on their outcome: DMARC/SPF ``reject`` (550) or
    ``temperror = "defer"`` (451). Otherwise the front checks SPF only and the worker verifies
    the rest after the 250, which keeps the CPU cost of DKIM off the listener.
    """
    a = cfg.auth
    return a.dmarc_enforce == "reject" or a.spf_fail == "reject" or a.temperror == "defer"


def build_processor(cfg: Config, store: Store, stages: Any = None, *, prefetch: Any = None) -> Any:
    from mailgate.pipeline.lifecycle import StagedProcessor
    from mailgate.pipeline.runner import PipelineRunner

    runner = PipelineRunner(cfg, store, stages=stages)
    # prefetch: the StageSet whose scanning stages start a claimed batch's daemon calls at once
    return runner if prefetch is None else StagedProcessor(runner, prefetch)


def build_stages(cfg: Config, store: Store) -> Any:
    """The configured stages built by their factories (docs/stages.md); a worker service."""
    from mailgate.pipeline.lifecycle import Services, StageSet
    from mailgate.pipeline.stages import registry

    return StageSet(cfg, Services(raw_message=store.get_raw, models=store), registry())


def build_url_signer(cfg: Config) -> Any:
    from mailgate.api.urls import AttachmentUrlSigner

    return AttachmentUrlSigner(cfg.api, Path(cfg.store.data_dir))


class WorkerRuntime:
    """Ingest + pipeline + delivery + replies for one partition of the spool."""

    def __init__(
        self, cfg: Config, *, index: int = 0, count: int = 1, store: Store | None = None
    ) -> None:
        self.cfg = cfg
        self.index = index
        self.count = count
        self._own_store = store is None
        self.store = store or build_store(cfg, worker=True)
        self.blobs = BlobStore(Path(cfg.store.data_dir) / "attachments", codec=codec_of(self.store))
        self.ingest: IngestWorker | None = None
        self.auth: Any = None
        self._services: list[Any] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._spool_waker: Callable[[], None] | None = None
        self.stop_event = asyncio.Event()

    async def start(self) -> None:
        from mailgate.mime.parse import configured_parser

        if self._own_store:
            await self.store.open()
        self.cfg = await with_shared_keys(self.cfg, self.store)
        stages = build_stages(self.cfg, self.store)
        self._services.append(stages)
        processor = build_processor(self.cfg, self.store, stages.stages, prefetch=stages)
        self.auth = build_auth(self.cfg)
        from mailgate.delivery.webhook import WebhookWorker

        # Every worker delivers webhooks: claims are leased rows, per-thread order holds across
        # processes (an earlier pending row of a thread holds back the later ones, in flight or
        # not), and each worker is woken by the messages it processed itself, so deliveries
        # spread over the processes that have the work (issue 16). As with the spool, a
        # backlog worker leaves the first `backlog_per_worker` x index due deliveries to the
        # others and wakes only for its own mail, so at a trickle the first delivers alone;
        # only the first wakes for events published elsewhere. Its metrics publisher also
        # carries the process's parse, auth and pipeline metrics.
        skip = self.index * self.cfg.ingest.backlog_per_worker
        webhook = WebhookWorker(
            self.store,
            self.cfg.webhooks,
            self.cfg.delivery,
            build_url_signer(self.cfg),
            follow_others=self.index == 0,
            skip=skip,
        )
        self._services.append(webhook)
        if self.index == 0:
            # Replies and retention run once (in the first worker), not once per partition.
            reply_sender = _build_reply_sender(self.cfg, self.store)
            if reply_sender is not None:
                self._services.append(reply_sender)
            purger = build_purger(self.cfg, self.store)  # [retention] (issue 15)
            if purger is not None:
                self._services.append(purger)
        notify = webhook.notify
        self.ingest = IngestWorker(
            self.store,
            processor,
            parse=configured_parser(self.cfg.mime.max_nesting, self.cfg.mime.remote_images),
            blob_sink=self.blobs.put,
            batch_size=self.cfg.ingest.batch_size,
            poll_interval=self.cfg.ingest.poll_interval,
            max_attempts=self.cfg.pipeline.max_attempts,
            node=self.cfg.store.node or None,
            lease=self.cfg.store.lease,
            on_processed=notify,
            auth=self.auth,
            skip=skip,
        )
        for service in self._services:
            await service.start()
        # mail spooled by another node (PostgreSQL NOTIFY); this node's front wakes us directly
        loop = asyncio.get_running_loop()

        def spool_waker() -> None:
            loop.call_soon_threadsafe(self.wake)

        self._spool_waker = spool_waker
        self.store.notifier.subscribe(SPOOL, spool_waker)
        self._tasks.append(asyncio.create_task(self.ingest.run(self.stop_event)))

    def wake(self) -> None:
        if self.ingest is not None:
            self.ingest.wake()

    async def stop(self) -> None:
        self.stop_event.set()
        if self._spool_waker is not None:
            self.store.notifier.unsubscribe(SPOOL, self._spool_waker)
            self._spool_waker = None
        for task in self._tasks:
            try:
                await asyncio.wait_for(task, timeout=self.cfg.smtp.shutdown_grace)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
        for service in reversed(self._services):
            with contextlib.suppress(Exception):
                await service.stop()
        if self.auth is not None:
            with contextlib.suppress(Exception):
                await self.auth.close()
        if self._own_store:
            await self.store.close()


def _build_reply_sender(cfg: Config, store: Store) -> Any:
    if not cfg.reply.enabled:
        return None
    try:
        from mailgate.delivery.smtp_out import ReplySender
    except ImportError:
        return None
    return ReplySender(store, cfg.reply)


class _ChildWorker:
    """One worker subprocess, restarted if it dies; woken through a pipe."""

    def __init__(self, cfg: Config, index: int, count: int) -> None:
        self.cfg = cfg
        self.index = index
        self.count = count
        self.proc: subprocess.Popen[bytes] | None = None
        self.wfd: int | None = None
        self.restarts = 0

    def spawn(self) -> None:
        rfd, wfd = os.pipe()
        os.set_blocking(wfd, False)
        args = [
            sys.executable,
            "-m",
            "mailgate.worker",
            "--index",
            str(self.index),
            "--count",
            str(self.count),
            "--notify-fd",
            str(rfd),
        ]
        if self.cfg.source != "<defaults>":
            args += ["--config", self.cfg.source]
        env = dict(os.environ)
        env["MAILGATE_DATA_DIR"] = str(self.cfg.store.data_dir)
        self.proc = subprocess.Popen(args, pass_fds=(rfd,), env=env)
        os.close(rfd)
        if self.wfd is not None:
            with contextlib.suppress(OSError):
                os.close(self.wfd)
        self.wfd = wfd

    def wake(self) -> None:
        if self.wfd is None:
            return
        with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError):
            os.write(self.wfd, b"\x01")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, grace: float) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.wfd is not None:
            with contextlib.suppress(OSError):
                os.close(self.wfd)
            self.wfd = None


class Front:
    """``mailgate serve``: SMTP + API here, workers inline or as child processes."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.store = build_store(cfg)
        self.smtp: SmtpServer | None = None
        self.api_runner: Any = None
        self.auth: Any = None
        self.inline: WorkerRuntime | None = None
        self.children: list[_ChildWorker] = []
        self._supervisor: asyncio.Task[None] | None = None
        self.smtp_address: tuple[str, int] | None = None
        self.api_address: tuple[str, int] | None = None
        self._lock = DataDirLock(Path(cfg.store.data_dir))
        self._retired: list[Any] = []  # auth checkers replaced by a reload, closed at stop

    def _on_spooled(self) -> None:
        if self.inline is not None:
            self.inline.wake()
        for child in self.children:
            child.wake()

    def _build_handler(self, cfg: Config) -> SmtpHandler:
        from mailgate.scanners.gate import DataGate

        self._gate = DataGate(cfg)  # [spam]/[antivirus] check_at = "data"
        return SmtpHandler(
            cfg.smtp,
            policy=RecipientPolicy(cfg.domains),
            spool=_NotifyingSpool(self.store, self._on_spooled),
            auth=self.auth,
            auth_inline=auth_needed_before_250(cfg),
            content_check=self._gate.check if self._gate.active else None,
        )

    async def start(self) -> None:
        check_data_dir(self.cfg)
        try:
            self._lock.acquire()
        except DataDirLocked as exc:
            raise StartupError(str(exc)) from None
        await self.store.open()
        self.cfg = await with_shared_keys(self.cfg, self.store)
        self.auth = build_auth(self.cfg)
        handler = self._build_handler(self.cfg)
        self.smtp = SmtpServer(self.cfg.smtp, handler)
        self.smtp_address = await self.smtp.start()
        if self.cfg.api.enabled:
            await self._start_api()
        if self.cfg.ingest.workers == 0:
            self.inline = WorkerRuntime(self.cfg, store=self.store)
            await self.inline.start()
        else:
            for i in range(self.cfg.ingest.workers):
                child = _ChildWorker(self.cfg, i, self.cfg.ingest.workers)
                child.spawn()
                self.children.append(child)
            self._supervisor = asyncio.create_task(self._supervise())
        self._write_runfile()
        log.info(
            "ready",
            extra={
                "fields": {
                    "smtp": f"{self.smtp_address[0]}:{self.smtp_address[1]}",
                    "api": f"{self.api_address[0]}:{self.api_address[1]}"
                    if self.api_address
                    else "off",
                    "data_dir": str(self.cfg.store.data_dir),
                    "workers": self.cfg.ingest.workers,
                }
            },
        )

    def _write_runfile(self) -> None:
        """``<data_dir>/serve.json``: the bound addresses (useful with port 0, and for scripts)."""
        info = {
            "pid": os.getpid(),
            "smtp": f"{self.smtp_address[0]}:{self.smtp_address[1]}" if self.smtp_address else None,
            "api": f"{self.api_address[0]}:{self.api_address[1]}" if self.api_address else None,
        }
        path = Path(self.cfg.store.data_dir) / "serve.json"
        tmp = path.with_suffix(".tmp")
        write_private_file(tmp, json.dumps(info).encode())
        os.replace(tmp, path)

    async def _start_api(self) -> None:
        from aiohttp import web

        from mailgate.api.app import create_api
        from mailgate.config import parse_hostport

        app = create_api(
            self.store,
            self.cfg.api,
            blobs=BlobStore(
                Path(self.cfg.store.data_dir) / "attachments", codec=codec_of(self.store)
            ),
            urls=build_url_signer(self.cfg),
            data_dir=Path(self.cfg.store.data_dir),
            governance=governance_for(self.store, Path(self.cfg.store.data_dir)),
            erase_notify=erasure_targets(self.cfg.webhooks),
        )
        from mailgate.api.ops import watch_engines
        from mailgate.scanners.health import EngineWatch

        watch_engines(app, EngineWatch(self.cfg))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        host, port = parse_hostport(self.cfg.api.listen)
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise StartupError(
                f"api.listen = {self.cfg.api.listen!r}: cannot listen: {exc.strerror or exc}"
            ) from exc
        self.api_runner = runner
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            addr = sockets[0].getsockname()
            self.api_address = (str(addr[0]), int(addr[1]))
        else:
            self.api_address = (host, port)

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            for child in self.children:
                if not child.alive():
                    code = child.proc.returncode if child.proc else None
                    child.restarts += 1
                    log.error(
                        "worker exited, restarting",
                        extra={
                            "fields": {
                                "index": child.index,
                                "code": code,
                                "restarts": child.restarts,
                                "error": f"worker exited with code {code}",
                            }
                        },
                    )
                    await asyncio.sleep(min(5.0, 0.5 * child.restarts))
                    child.spawn()

    async def reload(self, new: Config) -> None:
        """Apply a new, already validated config; what is running keeps going.

        * SMTP: a new handler (domains, mailboxes, limits, auth policy) and TLS context for new
          sessions (``SmtpServer.reload``); sessions in progress keep the ones they started
          with. The certificate is loaded first: a bad one raises ``StartupError`` and nothing
          changes.
        * API: the token set is swapped in place (``TokenAuth.replace``), and so are the
          attachment URL signing settings.
        * Workers (rules, templates, webhook targets and secrets): restarted gracefully with
          the new config, see ``_restart_workers``.
        * ``RESTART_ONLY`` settings keep their running values and are named in one log line.
        """
        new = await with_shared_keys(new, self.store)
        new, kept = keep_restart_only(self.cfg, new)
        if kept:
            log.warning(
                "reload: these settings need a restart and keep their running values",
                extra={"fields": {"keys": ",".join(kept), "error": "restart needed"}},
            )
        old_auth = self.auth
        if new.auth != self.cfg.auth:
            self.auth = build_auth(new)
        try:
            if self.smtp is not None:
                self.smtp.reload(new.smtp, self._build_handler(new))
        except StartupError:
            if self.auth is not old_auth and self.auth is not None:
                await self.auth.close()
            self.auth = old_auth
            raise
        if self.auth is not old_auth and old_auth is not None:
            # sessions that started before the reload may still be checking with it
            self._retired.append(old_auth)
        if self.api_runner is not None:
            from mailgate.api.app import AUTH
            from mailgate.api.messages import URLS

            app = self.api_runner.app
            app[AUTH].replace(new.api.tokens)
            # The workers sign attachment URLs with the new key/base/ttl; the API that checks
            # them must agree. The app is frozen once started, so the signer object it holds
            # takes the new settings in place.
            vars(app[URLS]).update(vars(build_url_signer(new)))
        if new.log != self.cfg.log:
            from mailgate.logs import setup_logging

            setup_logging(new.log.level, new.log.format)
        self.cfg = new
        await self._restart_workers()
        log.info("reloaded", extra={"fields": {"source": new.source}})

    async def _restart_workers(self) -> None:
        """Give the workers the new config by restarting them, one graceful stop each.

        Why a restart and not SIGHUP forwarded to them: a worker builds its pipeline (rules,
        templates), webhook targets (URLs, secrets, breakers) and reply sender from the config
        at start, so reloading in place would need a second, rarely exercised construction
        path in each of them. Stopping is already graceful (the batch in hand finishes within
        ``smtp.shutdown_grace``), processing is idempotent and resumes from the spool, and the
        front keeps accepting and spooling meanwhile, so a restart loses nothing and no SMTP
        client notices; it reuses the start path every boot exercises.
        """
        if self.inline is not None:
            await self.inline.stop()
            self.inline = WorkerRuntime(self.cfg, store=self.store)
            await self.inline.start()
            return
        if not self.children:
            return
        if self._supervisor is not None:
            # no respawn by the supervisor while the children are being replaced
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        grace = self.cfg.smtp.shutdown_grace
        children = list(self.children)

        def terminate_all() -> None:
            for child in children:
                child.terminate(grace)

        await asyncio.get_running_loop().run_in_executor(None, terminate_all)
        for child in children:
            child.cfg = self.cfg
            child.spawn()
        self._supervisor = asyncio.create_task(self._supervise())

    async def stop(self) -> None:
        if self.smtp is not None:
            await self.smtp.stop()
        if getattr(self, "_gate", None) is not None:
            await self._gate.close()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        grace = self.cfg.smtp.shutdown_grace
        if self.children:

            def terminate_all() -> None:
                for child in self.children:
                    child.terminate(grace)

            await asyncio.get_running_loop().run_in_executor(None, terminate_all)
        if self.inline is not None:
            await self.inline.stop()
        if self.api_runner is not None:
            await self.api_runner.cleanup()
        for auth in [self.auth, *self._retired]:
            if auth is not None:
                with contextlib.suppress(Exception):
                    await auth.close()
        await self.store.close()
        if self._lock.held:
            # ours to clean up only when we held the dir (a refused second serve must not
            # remove the running one's runfile)
            with contextlib.suppress(FileNotFoundError):
                (Path(self.cfg.store.data_dir) / "serve.json").unlink()
            self._lock.release()
        log.info("stopped")


RESTART_ONLY = (
    "smtp.listen",
    "api.listen",
    "api.enabled",
    "api.metrics_token",  # read by the started (frozen) API app, like the readyz thresholds
    "api.readyz_min_free_disk",
    "api.readyz_max_outbox_lag",
    "store.data_dir",
    "store.durability",
    "store.group_commit_window",
    "store.max_batch",
    "ingest.workers",
)
"""Settings bound at start (sockets, the open store, the worker count): a reload keeps them."""


def keep_restart_only(running: Config, new: Config) -> tuple[Config, list[str]]:
    """``new`` with every ``RESTART_ONLY`` setting put back to its running value, and the names
    of those that differed."""
    kept: list[str] = []
    for key in RESTART_ONLY:
        section, name = key.split(".")
        old_sec, new_sec = getattr(running, section), getattr(new, section)
        if getattr(old_sec, name) != getattr(new_sec, name):
            kept.append(key)
            new_sec = dataclasses.replace(new_sec, **{name: getattr(old_sec, name)})
            new = dataclasses.replace(new, **{section: new_sec})
    return new, kept


class _NotifyingSpool:
    """The store's spool, plus a wake-up for the workers after each commit."""

    def __init__(self, store: Store, notify: Any) -> None:
        self.store = store
        self.notify = notify

    async def spool(self, *records: Any) -> None:
        await self.store.spool(*records)
        self.notify()


def run_async(main: Coroutine[Any, Any, None]) -> None:
    """Run the event loop: uvloop when installed (faster connection handling), else asyncio."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


async def serve(cfg: Config, reload_config: Callable[[], Config] | None = None) -> None:
    """Run until SIGTERM/SIGINT; stop accepting, finish sessions, flush, exit.

    SIGHUP calls ``reload_config`` (the file again) and applies it with ``Front.reload``. A
    config that does not validate is refused: one log line per error, the same text
    ``check-config`` prints, and the running config stays. HUPs that arrive during a reload
    are folded into one more reload after it.
    """
    # The SQLite writer thread hands each commit back to the event loop; with CPython's default
    # 5 ms GIL switch interval that hand-over can wait milliseconds behind loop work, which
    # measured 265 vs 811 msgs/s for one sequential SMTP session (bench/smtp_bench.py, x1).
    sys.setswitchinterval(0.0005)
    front = Front(cfg)
    stop = asyncio.Event()
    hup = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # installed before start: a HUP during start-up is applied after it, never kills serve
    loop.add_signal_handler(signal.SIGHUP, hup.set)
    try:
        await front.start()
    except BaseException:
        await front.stop()
        raise
    _log_warnings(cfg)
    reloader = asyncio.create_task(_reload_on_hup(front, hup, reload_config))
    await stop.wait()
    reloader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reloader
    log.info("shutting down")
    await front.stop()


async def _reload_on_hup(
    front: Front, hup: asyncio.Event, reload_config: Callable[[], Config] | None
) -> None:
    while True:
        await hup.wait()
        hup.clear()
        if reload_config is None:
            log.warning(
                "reload: no config loader; SIGHUP ignored", extra={"fields": {"error": "no loader"}}
            )
            continue
        log.info("reload requested", extra={"fields": {"source": front.cfg.source}})
        try:
            new = reload_config()
        except ConfigErrors as exc:
            for err in exc.errors:
                log.error("reload refused", extra={"fields": {"error": str(err)}})
            continue
        except ConfigError as exc:
            log.error("reload refused", extra={"fields": {"error": str(exc)}})
            continue
        try:
            await front.reload(new)
        except StartupError as exc:
            log.error("reload refused", extra={"fields": {"error": str(exc)}})
            continue
        _log_warnings(front.cfg)


def _log_warnings(cfg: Config) -> None:
    """The warnings ``check-config`` prints, one line each (``error=`` like every warning line)."""
    for warning in config_warnings(cfg):
        log.warning("config warning", extra={"fields": {"error": warning}})


async def run_worker(cfg: Config, index: int, count: int, notify_fd: int | None) -> None:
    """The worker process body (``python -m mailgate.worker``)."""
    # As in ``serve``: the writer thread, the store's reader thread and the event loop share the
    # GIL, and with the default 5 ms switch interval a commit's hand-over (and every statement
    # of it) could wait behind the loop parsing the next message.
    sys.setswitchinterval(0.0005)
    runtime = WorkerRuntime(cfg, index=index, count=count)
    loop = asyncio.get_running_loop()
    stop = runtime.stop_event
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # The front reloads and then restarts the workers; a HUP sent to the whole process group
    # (a closed terminal) must not kill a worker mid-batch.
    loop.add_signal_handler(signal.SIGHUP, lambda: None)
    await runtime.start()
    if notify_fd is not None:
        os.set_blocking(notify_fd, False)

        def on_readable() -> None:
            try:
                data = os.read(notify_fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                # The front is gone: stop polling the pipe and keep working from the poll loop.
                loop.remove_reader(notify_fd)
                return
            runtime.wake()

        loop.add_reader(notify_fd, on_readable)
    parent = os.getppid()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        if os.getppid() != parent:
            log.warning(
                "front process went away; worker stopping",
                extra={"fields": {"error": "parent process changed"}},
            )
            break
    await runtime.stop()
