"""TOML configuration -> frozen dataclasses.

Owns the config schema (one dataclass per section), its defaults and its validation. Errors
name the file and line, the key, the value and what was expected, so ``mailgate check-config``
and ``mailgate serve`` can refuse bad config with one clear line. Nothing else reads the file
or the environment: each subsystem receives only its own section.

Adding a key: add a field to the section's dataclass (the loader validates its type from the
annotation) and document it in ``config.example.toml`` and the README (a test checks both).
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import logging
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import idna

ENV_CONFIG = "MAILGATE_CONFIG"
ENV_DATA_DIR = "MAILGATE_DATA_DIR"
ENV_STORE_DSN = "MAILGATE_STORE_DSN"
ENV_ENCRYPTION_KEY = "MAILGATE_ENCRYPTION_KEY"
PG_NO_ENCRYPTION = (
    "encryption at rest is implemented for the SQLite store only; with PostgreSQL use the"
    " database server's disk encryption"
)


class ConfigError(ValueError):
    """A config problem, already phrased for the operator (file:line, key, value, expected)."""


class ConfigErrors(ConfigError):
    """Several config problems at once (``check-config`` lists them all); str() is one per line."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


_Where = TypeVar("_Where")


def run_checks(
    checks: Iterable[Callable[[Config, _Where], None]], cfg: Config, where: _Where
) -> None:
    """Run every check, then raise what they found together (``check-config`` lists them all):
    one problem as itself, several as `ConfigErrors`."""
    errors: list[ConfigError] = []
    for check in checks:
        try:
            check(cfg, where)
        except ConfigErrors as exc:
            errors.extend(exc.errors)
        except ConfigError as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ConfigErrors(errors)


# --------------------------------------------------------------------------- value kinds

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)


def parse_size(value: Any) -> int:
    """``"25MB"`` / ``"512k"`` / ``1048576`` -> bytes (1 KB = 1024 bytes, as Postfix counts)."""
    if isinstance(value, bool):
        raise ValueError("a size like 25MB")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size like 25MB")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            num = float(m.group(1))
            unit = (m.group(2) or "b").lower()[:1]
            mult = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]
            return int(num * mult)
    raise ValueError("a size like 25MB, 512KB or a number of bytes")


def parse_duration(value: Any) -> float:
    """``"30s"`` / ``"5m"`` / ``"250ms"`` / ``12`` -> seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration like 30s")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a non-negative duration like 30s")
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            num = float(m.group(1))
            unit = (m.group(2) or "s").lower()
            mult = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
            return num * mult
    raise ValueError("a duration like 250ms, 30s, 5m, 2h or 1d")


def parse_rate(value: Any) -> int:
    """``"1KB/s"`` / ``"512"`` / ``1024`` -> bytes per second (the size units of ``parse_size``)."""
    if isinstance(value, str) and value.strip().lower().endswith("/s"):
        value = value.strip()[:-2]
    try:
        return parse_size(value)
    except ValueError:
        raise ValueError("a rate like 1KB/s or a number of bytes per second") from None


def parse_hostport(value: Any) -> tuple[str, int]:
    """``"127.0.0.1:2525"`` / ``"[::1]:25"`` -> (host, port)."""
    if not isinstance(value, str):
        raise ValueError("an address like 127.0.0.1:2525")
    m = re.match(r"^\[([0-9a-fA-F:.]+)\]:(\d+)$", value) or re.match(r"^([^:\s]+):(\d+)$", value)
    if not m:
        raise ValueError("an address like 127.0.0.1:2525 or [::1]:2525")
    host, port = m.group(1), int(m.group(2))
    if not 0 <= port <= 65535:
        raise ValueError("a port between 0 and 65535")
    return host, port


Size = typing.Annotated[int, "size"]
Duration = typing.Annotated[float, "duration"]
Rate = typing.Annotated[int, "rate"]
HostPort = typing.Annotated[str, "hostport"]
ExistingFile = typing.Annotated[str, "existing-file"]
Raw = typing.Annotated[Any, "raw"]


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class SmtpConfig:
    listen: HostPort = "127.0.0.1:2525"
    hostname: str = "mx.example.test"
    max_message_size: Size = 25 * 1024 * 1024
    max_recipients: int = 100
    tls_cert: ExistingFile = ""
    tls_key: ExistingFile = ""
    require_tls: bool = False
    proxy_protocol: bool = False
    max_connections: int = 500
    max_connections_per_ip: int = 50
    max_messages_per_ip_per_minute: int = 6000
    max_line_length: int = 65536
    max_command_length: int = 512
    max_errors: int = 20
    """Error replies a session may earn without delivering a message before it is cut (Postfix
    ``smtpd_hard_error_limit``): a recipient-harvesting or probing client is disconnected."""
    idle_timeout: Duration = 300.0
    shutdown_grace: Duration = 10.0
    greet_delay: Duration = 1.0
    data_timeout: Duration = 600.0
    min_data_rate: Rate = 1024
    min_data_rate_grace: Duration = 30.0
    session_timeout: Duration = 1800.0
    max_connections_per_network: int = 100
    max_data_per_network: int = 20
    reserved_connections: int = 50
    stress_idle_timeout: Duration = 10.0
    history_ttl: Duration = 86400.0

    @property
    def host(self) -> str:
        return parse_hostport(self.listen)[0]

    @property
    def port(self) -> int:
        return parse_hostport(self.listen)[1]


@dataclass(frozen=True)
class StoreConfig:
    data_dir: str = "./mailgate-data"
    durability: Literal["normal", "fsync"] = "fsync"
    group_commit_window: Duration = 0.0
    max_batch: int = 256
    backend: Literal["sqlite", "postgresql"] = "sqlite"
    dsn: str = ""
    """PostgreSQL only; ``$MAILGATE_STORE_DSN`` overrides (keep passwords out of the file)."""
    node: str = ""
    """This node's name in leases (empty: the host name); unique per node sharing one store."""
    lease: Duration = 60.0
    migrate: bool = True
    encryption_key_file: str = ""
    """Encryption at rest (issue 15): base64 of 32 random bytes; ``$MAILGATE_ENCRYPTION_KEY`` too."""


@dataclass(frozen=True)
class DomainConfig:
    name: str
    mailboxes: list[str] = field(default_factory=list)
    catch_all: bool = False
    tenant: str = ""
    tenants: list[str] = field(default_factory=list)
    """Wildcard only: the labels that are tenants (``acme`` of ``acme.support.example.com``)."""
    open_tenants: bool = False
    """Wildcard only: any label is a tenant (outsiders can mint tenants; see docs/replies.md)."""

    @property
    def is_wildcard(self) -> bool:
        return self.name.startswith("*.")


@dataclass(frozen=True)
class AuthConfig:
    enabled: bool = True
    nameservers: list[str] = field(default_factory=list)
    timeout: Duration = 2.0
    budget: Duration = 8.0
    cache_size: int = 10000
    dmarc_enforce: Literal["tag", "quarantine", "reject"] = "tag"
    shadow: bool = False
    spf_fail: Literal["tag", "quarantine", "reject"] = "tag"
    temperror: Literal["accept", "quarantine", "defer"] = "accept"
    arc_trusted_sealers: list[str] = field(default_factory=list)
    verify_processes: int = 0


@dataclass(frozen=True)
class ApiToken:
    token: str = ""
    token_sha256: str = ""
    tenant: str = "default"
    name: str = ""
    # admin: may erase a data subject in any tenant (DELETE /v1/subjects/{address}, issue 15)
    admin: bool = False


@dataclass(frozen=True)
class ApiConfig:
    enabled: bool = True
    listen: HostPort = "127.0.0.1:8025"
    public_url: str = "http://127.0.0.1:8025"
    tokens: list[ApiToken] = field(default_factory=list)
    attachment_url_ttl: Duration = 7 * 86400.0
    url_signing_key: str = ""
    readyz_min_free_disk: Size = 100 * 1024 * 1024
    readyz_max_outbox_lag: Duration = 900.0
    metrics_token: str = ""


@dataclass(frozen=True)
class WebhookConfig:
    url: str
    secrets: list[str] = field(default_factory=list)
    tenant: str = "default"
    name: str = ""
    enabled: bool = True
    timeout: Duration = 10.0
    max_concurrency: int = 8
    events: list[str] = field(default_factory=lambda: ["message.received"])


@dataclass(frozen=True)
class DeliveryConfig:
    retry_schedule: str = "0s, 5s, 5m, 30m, 2h, 5h, 10h, 14h, 20h, 24h"
    client_error_retries: int = 2
    jitter: float = 0.1
    poll_interval: Duration = 0.5
    breaker_threshold: int = 5
    breaker_cooldown: Duration = 30.0


@dataclass(frozen=True)
class EntityConfig:
    name: str
    pattern: str
    validator: Literal["", "luhn"] = ""
    mask: bool = False
    fields: list[str] = field(default_factory=lambda: ["subject", "text"])


@dataclass(frozen=True)
class PipelineConfig:
    stages: list[str] = field(
        default_factory=lambda: [
            "dedup",
            "intent",
            "thread",
            "antivirus",
            "spam",
            "scan",
            "classify",
            "extract",
            "route",
            "quarantine",
            "respond",
        ]
    )
    default_queue: str = "triage"
    dedup_window: Duration = 7 * 86400.0
    stage_timeout: Duration = 5.0
    max_attempts: int = 5
    rules_file: str = ""
    ticket_prefix: str = "T-"
    max_attachment_size: Size = 25 * 1024 * 1024
    blocked_extensions: list[str] = field(
        default_factory=lambda: [
            "exe",
            "scr",
            "bat",
            "cmd",
            "com",
            "pif",
            "vbs",
            "js",
            "jse",
            "wsf",
            "msi",
            "hta",
            "cpl",
            "jar",
            "ps1",
            "lnk",
            "iso",
            "img",
        ]
    )
    entities: list[EntityConfig] = field(default_factory=list)
    # Attachment types by *sniffed* content (globs like "application/x-*"): a denylist, and an
    # allowlist that, when non-empty, quarantines every other detected type.
    blocked_types: list[str] = field(
        default_factory=lambda: [
            "application/x-msdownload",
            "application/x-dosexec",
            "application/vnd.microsoft.portable-executable",
            "application/x-executable",
            "application/x-elf",
            "application/x-mach-binary",
            "application/x-sharedlib",
            "application/x-msi",
            "application/x-ms-shortcut",
        ]
    )
    allowed_types: list[str] = field(default_factory=list)
    max_compression_ratio: float = 100.0


MAX_MIME_NESTING = 250
"""Upper bound for [mime] max_nesting: the stdlib parser nests one generator per level and
reaches Python's recursion limit near 1000 levels (past it: unscannable anyway)."""


@dataclass(frozen=True)
class MimeConfig:
    max_nesting: int = 100  # Postfix's mime_nesting_limit; deeper mail is quarantined unscannable
    remote_images: Literal["keep", "strip"] = "keep"


@dataclass(frozen=True)
class IngestConfig:
    workers: int = 2
    backlog_per_worker: int = 100
    """Workers after the first take only mail waiting beyond this many messages per worker
    before them (worker *i* skips ``i * backlog_per_worker``) and look every ``poll_interval``
    instead of on each message: a trickle keeps one worker and leaves the cores to the
    listener, a backlog brings in the rest. 0: every worker takes the oldest mail alike."""
    batch_size: int = 64
    poll_interval: Duration = 0.2
    worker_nice: int = 10
    """Added to the worker processes' CPU niceness: when the cores are busy the listener (what
    remote senders wait on) goes first and processing, durable and resumable, takes the rest."""


@dataclass(frozen=True)
class ReplyConfig:
    enabled: bool = False
    smarthost: HostPort = "127.0.0.1:2526"
    smarthost_tls: Literal["none", "starttls", "tls"] = "none"
    smarthost_username: str = ""
    smarthost_password: str = ""
    from_: str = "support@example.test"
    default_template: str = "ack"
    templates_dir: str = "./templates"
    null_sender: bool = True
    per_thread_limit: int = 1
    per_sender_limit: int = 3
    per_sender_window: Duration = 86400.0
    per_domain_limit: int = 500
    global_hourly_cap: int = 1000
    skip_dmarc_fail: bool = True
    dkim_domain: str = ""
    dkim_selector: str = ""
    dkim_key_file: ExistingFile = ""
    footer: str = ""
    sla: Raw = field(default_factory=dict)
    kb_links: Raw = field(default_factory=dict)
    tenant_from: Raw = field(default_factory=dict)
    retry_schedule: str = "0s, 1m, 5m, 15m, 1h, 2h, 4h*5"
    timeout: Duration = 30.0
    helo_name: str = ""
    smarthost_ca_file: ExistingFile = ""


OnError = Literal["defer", "continue", "quarantine"]
"""A stage's failure policy when its engine is down, slow or answers garbage (docs/stages.md)."""


@dataclass(frozen=True)
class SpamConfig:
    engine: Literal["none", "rspamd"] = "none"
    url: str = "http://127.0.0.1:11333"
    password: str = ""
    timeout: Duration = 3.0
    on_error: OnError = "continue"
    quarantine_at: float = 0.0
    """Score at which the worker quarantines; 0 with reject_at 0: follow rspamd's action."""
    reject_at: float = 0.0
    check_at: Literal["worker", "data"] = "worker"
    """``data``: also check before the 250 and refuse rejected spam with 554 5.7.1 (not stored)."""
    unready_after: Duration = 60.0


@dataclass(frozen=True)
class AntivirusConfig:
    engine: Literal["none", "clamav"] = "none"
    address: str = "127.0.0.1:3310"
    """``host:port`` of clamd's TCPSocket, or ``unix:/path`` of its LocalSocket."""
    timeout: Duration = 4.0
    on_error: OnError = "defer"
    check_at: Literal["worker", "data"] = "worker"
    """``data``: also scan before the 250 and refuse a virus with 554 5.7.1 (not stored)."""
    unready_after: Duration = 60.0


@dataclass(frozen=True)
class ClassifierConfig:
    """The routing model trained on the team's labels (README "Routing by a trained model")."""

    enabled: bool = False
    threshold: float = 0.7
    """Calibrated probability at or above which the model's queue is used."""
    fallback_queue: str = "triage"
    """Where a message goes when the model is not confident enough (manual triage)."""
    min_examples: int = 5
    """Labelled messages a queue needs to be learnt; queues with fewer are left out."""


@dataclass(frozen=True)
class RetentionRule:
    """``[[retention.rules]]``: other durations for one tenant and/or one queue (0 = forever).

    The most specific rule wins: tenant and queue, then queue, then tenant, then ``[retention]``.
    """

    tenant: str = ""
    queue: str = ""
    raw: Duration | None = None
    envelopes: Duration | None = None
    attachments: Duration | None = None
    delivered_events: Duration | None = None
    dead_letters: Duration | None = None


@dataclass(frozen=True)
class RetentionConfig:
    """How long stored data is kept (issue 15); 0 keeps it forever (the default)."""

    raw: Duration = 0.0
    envelopes: Duration = 0.0
    attachments: Duration = 0.0
    delivered_events: Duration = 0.0
    dead_letters: Duration = 0.0
    audit: Duration = 0.0
    interval: Duration = 600.0
    batch_size: int = 200
    rules: list[RetentionRule] = field(default_factory=list)


@dataclass(frozen=True)
class LogConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["logfmt", "json"] = "logfmt"


@dataclass(frozen=True)
class Config:
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    domains: list[DomainConfig] = field(
        default_factory=lambda: [
            DomainConfig(name="localhost", catch_all=True, tenant="default"),
            DomainConfig(name="example.test", catch_all=True, tenant="default"),
        ]
    )
    auth: AuthConfig = field(default_factory=AuthConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    webhooks: list[WebhookConfig] = field(default_factory=list)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    rules: Raw = field(default_factory=list)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    mime: MimeConfig = field(default_factory=MimeConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    reply: ReplyConfig = field(default_factory=ReplyConfig)
    spam: SpamConfig = field(default_factory=SpamConfig)
    antivirus: AntivirusConfig = field(default_factory=AntivirusConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    log: LogConfig = field(default_factory=LogConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    source: str = "<defaults>"

    @property
    def data_dir(self) -> Path:
        return Path(self.store.data_dir)


# --------------------------------------------------------------------------- loading

# TOML keys that are Python keywords are stored with a trailing underscore.
_KEY_ALIASES = {"from": "from_"}
_REMOVED_KEYS = {
    "smtp.chunked_data": "DATA is always read as it arrives since the listener has its own "
    "protocol (issue 16); the line can be deleted",
}
"""Keys a former version knew: ignored with a warning instead of failing an upgrade."""
_SKIP_FIELDS = {"source"}


def _toml_key(field_name: str) -> str:
    return field_name[:-1] if field_name.endswith("_") else field_name


class _Locator:
    """Finds the line of ``section.key`` in the TOML text (tomllib keeps no positions)."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def line_of(self, keypath: str) -> int | None:
        parts = [p for p in re.split(r"[.\[\]]+", keypath) if p and not p.isdigit()]
        if not parts:
            return None
        key = parts[-1]
        section = ".".join(parts[:-1])
        in_section = not section
        pat = re.compile(rf"^\s*\"?{re.escape(key)}\"?\s*=")
        for i, line in enumerate(self.lines, 1):
            stripped = line.strip()
            header = re.match(r"^\[\[?\s*([^\]]+?)\s*\]\]?", stripped)
            if header:
                in_section = header.group(1) == section or (not section)
                if not section and header:
                    in_section = False
                # a table header is itself the location of a section-level error
                if header.group(1) == keypath.split("[")[0]:
                    return i
                continue
            if in_section and pat.match(line):
                return i
        return None

    def where(self, keypath: str) -> str:
        line = self.line_of(keypath)
        return f"{self.path}:{line}" if line else self.path


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        base, tag = typing.get_args(tp)[:2]
        return {
            "size": "a size like 25MB",
            "duration": "a duration like 30s",
            "rate": "a rate like 1KB/s",
            "hostport": "an address like 127.0.0.1:2525",
            "existing-file": "a path to an existing file",
            "raw": "a value",
        }.get(tag, _describe(base))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0])}s"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        tp, str(tp)
    )


def _convert(value: Any, tp: Any, keypath: str, loc: _Locator) -> Any:
    def fail(expected: str) -> ConfigError:
        return ConfigError(f"{loc.where(keypath)}: {keypath} = {value!r}: expected {expected}")

    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        base, tag = typing.get_args(tp)[:2]
        try:
            if tag == "size":
                return parse_size(value)
            if tag == "duration":
                return parse_duration(value)
            if tag == "rate":
                return parse_rate(value)
            if tag == "hostport":
                parse_hostport(value)
                return value
            if tag == "existing-file":
                if not isinstance(value, str):
                    raise ValueError("a path to an existing file")
                if value and not Path(value).is_file():
                    raise ValueError("a path to an existing, readable file (not found)")
                return value
            if tag == "raw":
                return value
        except ValueError as exc:
            raise fail(str(exc)) from None
        return _convert(value, base, keypath, loc)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise fail(_describe(tp))
        return value
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _convert(value, arg, keypath, loc)
            except ConfigError:
                continue
        raise fail(" or ".join(_describe(a) for a in typing.get_args(tp)))
    if origin is list:
        if not isinstance(value, list):
            raise fail(_describe(tp))
        (item_tp,) = typing.get_args(tp)
        items: list[Any] = []
        item_errors: list[ConfigError] = []
        for i, v in enumerate(value):
            try:
                items.append(_convert(v, item_tp, f"{keypath}[{i}]", loc))
            except ConfigError as exc:
                item_errors.extend(_flatten(exc))
        if item_errors:
            raise ConfigErrors(item_errors)
        return items
    if origin is dict:
        if not isinstance(value, dict):
            raise fail("a table")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise fail("a table")
        return _build(tp, value, keypath, loc)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
        if value < 0:
            raise fail("a non-negative integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise fail("a string")
        return value
    return value


def _flatten(exc: ConfigError) -> list[ConfigError]:
    return list(exc.errors) if isinstance(exc, ConfigErrors) else [exc]


def _build(cls: Any, data: dict[str, Any], keypath: str, loc: _Locator) -> Any:
    """``data`` as ``cls``; every bad key of the table (and of nested tables) is reported at
    once, as a `ConfigErrors`, so ``check-config`` lists them all."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in _SKIP_FIELDS}
    kwargs: dict[str, Any] = {}
    errors: list[ConfigError] = []
    for key, value in data.items():
        name = _KEY_ALIASES.get(key, key)
        sub = f"{keypath}.{key}" if keypath else key
        if sub in _REMOVED_KEYS:
            logging.getLogger("mailgate.config").warning(
                "%s: %r is no longer used: %s", loc.where(sub), sub, _REMOVED_KEYS[sub]
            )
            continue
        if name not in fields:
            known = ", ".join(sorted(_toml_key(n) for n in fields))
            errors.append(
                ConfigError(f"{loc.where(sub)}: unknown key {sub!r}: expected one of {known}")
            )
            continue
        try:
            kwargs[name] = _convert(value, hints[name], sub, loc)
        except ConfigError as exc:
            errors.extend(_flatten(exc))
    for name, f in fields.items():
        if (
            name not in kwargs
            and _toml_key(name) not in data
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ):
            sub = f"{keypath}.{_toml_key(name)}" if keypath else name
            errors.append(
                ConfigError(
                    f"{loc.where(keypath)}: missing key {sub!r}: expected {_describe(hints[name])}"
                )
            )
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ConfigErrors(errors)
    return cls(**kwargs)


# Values shipped in config.example.toml (and the usual stand-ins): refused so that no install
# runs with a secret everybody can read in the repository (issue 11).
PLACEHOLDER_TOKENS = frozenset({"change-me", "changeme", "change_me", "replace-me", "secret"})
PLACEHOLDER_WEBHOOK_SECRETS = frozenset(
    {
        "whsec_change-me",
        "whsec_changeme",
        "change-me",
        # The Standard Webhooks specification's example secret, once shipped in our example too.
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    }
)
MIN_TOKEN_LENGTH = 32
GEN_TOKEN = "generate one with: mailgate keys new-token"
GEN_SECRET = "generate one with: mailgate keys new-webhook-secret"


_DOMAIN_RE = re.compile(
    r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)


def domain_to_ascii(name: str) -> str:
    """A domain (or ``*.`` wildcard) in U-labels or A-labels -> lowercase A-labels.

    IDNA 2008 with the UTS #46 mapping (the ``idna`` package), so ``Bücher.example`` and
    ``xn--bcher-kva.example`` are one domain in the config and at RCPT. ValueError when the
    name is not a valid IDN (an A-label that does not decode, a disallowed code point).
    """
    name = name.strip().rstrip(".")
    prefix = ""
    if name.startswith("*."):
        prefix, name = "*.", name[2:]
    lowered = name.lower()
    if lowered.isascii() and "xn--" not in lowered:
        return prefix + lowered  # plain LDH (or not a domain: _DOMAIN_RE says so)
    return prefix + idna.encode(name, uts46=True).decode("ascii")


def _validate(cfg: Config, loc: _Locator) -> None:
    """Cross-field checks the type annotations cannot express; every failure, not only the first."""
    errors: list[ConfigError] = []

    def bad(keypath: str, value: Any, expected: str) -> None:
        errors.append(
            ConfigError(f"{loc.where(keypath)}: {keypath} = {value!r}: expected {expected}")
        )

    if bool(cfg.smtp.tls_cert) != bool(cfg.smtp.tls_key):
        key = "smtp.tls_key" if cfg.smtp.tls_cert else "smtp.tls_cert"
        bad(key, "", "both tls_cert and tls_key, or neither")
    if cfg.smtp.require_tls and not cfg.smtp.tls_cert:
        bad("smtp.require_tls", True, "tls_cert and tls_key to be set")
    host = cfg.smtp.host
    if host not in ("localhost", "*", "") and not _is_ip(host):
        bad("smtp.listen", cfg.smtp.listen, "an IP address (or localhost) and a port")
    if cfg.smtp.max_message_size <= 0:
        bad("smtp.max_message_size", cfg.smtp.max_message_size, "a positive size")
    if cfg.smtp.max_recipients <= 0:
        bad("smtp.max_recipients", cfg.smtp.max_recipients, "a positive integer")
    if cfg.smtp.max_line_length < 80:
        bad("smtp.max_line_length", cfg.smtp.max_line_length, "at least 80 (RFC 5321: 1000)")
    if cfg.smtp.max_connections and cfg.smtp.reserved_connections >= cfg.smtp.max_connections:
        bad(
            "smtp.reserved_connections",
            cfg.smtp.reserved_connections,
            "fewer than max_connections (the rest is for clients without a clean history)",
        )
    if cfg.smtp.stress_idle_timeout < 0 or cfg.smtp.stress_idle_timeout > cfg.smtp.idle_timeout:
        bad(
            "smtp.stress_idle_timeout",
            cfg.smtp.stress_idle_timeout,
            "0 (off) up to smtp.idle_timeout",
        )
    for key in ("data_timeout", "session_timeout"):
        if getattr(cfg.smtp, key) <= 0:
            bad(f"smtp.{key}", getattr(cfg.smtp, key), "a positive duration (a deadline)")
    if cfg.store.backend == "postgresql" and not cfg.store.dsn:
        bad("store.dsn", "", "a PostgreSQL DSN (or $MAILGATE_STORE_DSN) with backend = postgresql")
    if cfg.store.dsn and not cfg.store.dsn.startswith(("postgresql://", "postgres://")):
        bad("store.dsn", "<hidden>", "a postgresql://user@host:port/dbname URL")
    if cfg.store.backend == "postgresql" and cfg.api.enabled and not cfg.api.tokens:
        bad(
            "api.tokens",
            [],
            "at least one [[api.tokens]] with backend = postgresql (a generated token would"
            " differ per node)",
        )
    if cfg.store.lease < 5:
        bad("store.lease", cfg.store.lease, "at least 5s (longer than one batch takes)")
    if cfg.store.node and not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", cfg.store.node):
        bad("store.node", cfg.store.node, "letters, digits, '.', '_' or '-' (at most 64)")
    if not cfg.domains:
        bad(
            "domains",
            [],
            "at least one [[domains]] entry (mailgate accepts mail only for its domains)",
        )
    seen: set[str] = set()
    for i, d in enumerate(cfg.domains):
        try:
            name = domain_to_ascii(d.name)
        except ValueError:
            name = ""  # not a valid IDN (e.g. a bad A-label): refused just below
        if not _DOMAIN_RE.match(name):
            bad(
                f"domains[{i}].name",
                d.name,
                "a domain name like example.com, bücher.example or *.support.example.com",
            )
        if name and name in seen:
            bad(f"domains[{i}].name", d.name, "each domain once")
        seen.add(name)
        if not d.catch_all and not d.mailboxes:
            bad(f"domains[{i}].mailboxes", [], "a list of mailboxes, or catch_all = true")
        for mb in d.mailboxes:
            if not mb or "@" in mb or any(c.isspace() for c in mb):
                bad(f"domains[{i}].mailboxes", mb, 'local parts like "support" (no @)')
    _validate_tenants(cfg.domains, bad)
    for i, ns in enumerate(cfg.auth.nameservers):
        try:
            h, _ = parse_hostport(ns) if ":" in ns and not _is_ip(ns) else (ns, 53)
            if not _is_ip(h):
                raise ValueError
        except ValueError:
            bad(f"auth.nameservers[{i}]", ns, "an IP address, optionally with :port")
    if cfg.api.enabled and _same_listener(cfg.smtp.listen, cfg.api.listen):
        bad("api.listen", cfg.api.listen, f"an address other than smtp.listen ({cfg.smtp.listen})")
    if cfg.api.enabled and not re.match(r"^https?://", cfg.api.public_url):
        bad("api.public_url", cfg.api.public_url, "an http:// or https:// URL")
    for i, t in enumerate(cfg.api.tokens):
        if not t.token and not t.token_sha256:
            bad(f"api.tokens[{i}]", {}, "token or token_sha256")
        if t.token and t.token.strip().lower() in PLACEHOLDER_TOKENS:
            bad(f"api.tokens[{i}].token", t.token, f"a real token, not a placeholder ({GEN_TOKEN})")
        elif t.token and len(t.token) < MIN_TOKEN_LENGTH:
            # the value is a secret: name its length, never echo it
            bad(
                f"api.tokens[{i}].token",
                f"<{len(t.token)} characters>",
                f"at least {MIN_TOKEN_LENGTH} characters ({GEN_TOKEN})",
            )
        if t.token_sha256 and not re.fullmatch(r"[0-9a-fA-F]{64}", t.token_sha256):
            bad(f"api.tokens[{i}].token_sha256", t.token_sha256, "64 hex digits")
    mt = cfg.api.metrics_token
    if mt and (mt.strip().lower() in PLACEHOLDER_TOKENS or len(mt) < MIN_TOKEN_LENGTH):
        bad(
            "api.metrics_token",
            f"<{len(mt)} characters>",
            f"empty (no auth) or a real token of at least {MIN_TOKEN_LENGTH} characters ({GEN_TOKEN})",
        )
    for i, w in enumerate(cfg.webhooks):
        if not re.match(r"^https?://[^/\s]+", w.url):
            bad(f"webhooks[{i}].url", w.url, "an http:// or https:// URL")
        if not w.secrets:
            bad(
                f"webhooks[{i}].secrets",
                [],
                "at least one signing secret (webhooks are always signed)",
            )
        for j, secret in enumerate(w.secrets):
            if secret.strip().lower() in PLACEHOLDER_WEBHOOK_SECRETS:
                bad(
                    f"webhooks[{i}].secrets[{j}]",
                    secret,
                    f"a real signing secret, not a placeholder ({GEN_SECRET})",
                )
    if cfg.ingest.workers > 16:
        bad("ingest.workers", cfg.ingest.workers, "0 (inline) to 16 worker processes")
    if cfg.ingest.backlog_per_worker < 0:
        bad("ingest.backlog_per_worker", cfg.ingest.backlog_per_worker, "0 or more messages")
    if not 0 <= cfg.ingest.worker_nice <= 19:
        bad("ingest.worker_nice", cfg.ingest.worker_nice, "0 (as the listener) to 19")
    if not 1 <= cfg.mime.max_nesting <= MAX_MIME_NESTING:
        bad("mime.max_nesting", cfg.mime.max_nesting, f"1 to {MAX_MIME_NESTING} (Postfix: 100)")
    if cfg.spam.engine != "none" and not re.match(r"^https?://[^/\s]+", cfg.spam.url):
        bad("spam.url", cfg.spam.url, "an http:// URL of rspamd's normal worker")
    if cfg.antivirus.engine != "none" and not _clamd_address_ok(cfg.antivirus.address):
        bad("antivirus.address", cfg.antivirus.address, '"host:port" or "unix:/path/to/clamd.ctl"')
    for section, timeout in (("spam", cfg.spam.timeout), ("antivirus", cfg.antivirus.timeout)):
        if timeout <= 0 or (cfg.pipeline.stage_timeout and timeout >= cfg.pipeline.stage_timeout):
            # the engine's own timeout must fire first, so that on_error decides, not the runner
            bad(f"{section}.timeout", timeout, "more than 0 and less than pipeline.stage_timeout")
    if not 0.0 <= cfg.classifier.threshold <= 1.0:
        bad("classifier.threshold", cfg.classifier.threshold, "a probability from 0 to 1")
    if not cfg.classifier.fallback_queue.strip():
        bad("classifier.fallback_queue", cfg.classifier.fallback_queue, "a queue name")
    if cfg.classifier.min_examples < 2:
        bad("classifier.min_examples", cfg.classifier.min_examples, "at least 2")
    _validate_retention(cfg.retention, bad)
    if cfg.store.encryption_key_file and not Path(cfg.store.encryption_key_file).is_file():
        bad("store.encryption_key_file", cfg.store.encryption_key_file, "an existing key file")
    if cfg.store.encryption_key_file and cfg.store.backend == "postgresql":
        # Never store plaintext while the operator believes a key protects it.
        bad(
            "store.encryption_key_file",
            cfg.store.encryption_key_file,
            f'empty with backend = "postgresql" ({PG_NO_ENCRYPTION})',
        )
    if errors:
        raise ConfigErrors(errors)


_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _validate_retention(r: RetentionConfig, bad: typing.Callable[[str, Any, str], None]) -> None:
    """The purger's batch bound, rule scopes, and an audit log that outlives what it describes."""
    if not 1 <= r.batch_size <= 10000:
        bad("retention.batch_size", r.batch_size, "1 to 10000 messages per batch")
    if r.interval < 1:
        bad("retention.interval", r.interval, "at least 1s between purge runs")
    for i, rule in enumerate(r.rules):
        if not rule.tenant and not rule.queue:
            bad(f"retention.rules[{i}]", {}, "a tenant, a queue or both")
    longest = max((r.raw, r.envelopes, r.attachments, r.delivered_events, r.dead_letters))
    if r.audit and (longest == 0 or r.audit < longest):
        bad("retention.audit", r.audit, "0 (forever) or at least the longest other retention")


def _validate_tenants(
    domains: list[DomainConfig], bad: typing.Callable[[str, Any, str], None]
) -> None:
    """Wildcard tenants: listed (or explicitly open), DNS labels, never another domain's tenant.

    A label listed under two entries, or equal to a tenant another entry names (or to
    ``default``), would silently merge two domains' data into one tenant: refused.
    """
    named: dict[str, int] = {"default": -1}  # tenant -> the entry naming it (-1: built in)
    for i, d in enumerate(domains):
        if d.tenant or not d.is_wildcard:
            named.setdefault((d.tenant or "default").lower(), i)
    for i, d in enumerate(domains):
        if not d.is_wildcard:
            if d.tenants or d.open_tenants:
                key = "tenants" if d.tenants else "open_tenants"
                bad(f"domains[{i}].{key}", getattr(d, key), "only on a *.wildcard domain")
            continue
        if d.tenant and (d.tenants or d.open_tenants):
            bad(
                f"domains[{i}].tenant",
                d.tenant,
                "either tenant (one tenant for every label) or tenants",
            )
            continue
        if not d.tenant and not d.tenants and not d.open_tenants:
            bad(
                f"domains[{i}].tenants",
                [],
                'the labels that are tenants, e.g. ["acme"], or open_tenants = true'
                ' (anyone may then mint a tenant), or tenant = "name" for every label',
            )
        for label in d.tenants:
            key = label.lower()
            if not _LABEL_RE.match(key):
                bad(f"domains[{i}].tenants", label, "DNS labels (letters, digits, hyphens)")
            elif key in named and named[key] != i:
                owner = (
                    "every domain without a tenant" if named[key] < 0 else f"domains[{named[key]}]"
                )
                bad(
                    f"domains[{i}].tenants",
                    label,
                    f"a tenant of this domain only ({owner} already uses tenant {key!r};"
                    " sharing it would merge two domains' data)",
                )
            else:
                named[key] = i


def _clamd_address_ok(address: str) -> bool:
    if address.startswith("unix:"):
        return len(address) > len("unix:")
    try:
        parse_hostport(address)
    except ValueError:
        return False
    return True


def config_warnings(cfg: Config) -> list[str]:
    """Valid but probably unintended settings: ``check-config`` prints them, ``serve`` logs them."""
    warnings: list[str] = []
    warnings.extend(_reply_from_warnings(cfg))
    if not cfg.store.encryption_key_file and not os.environ.get(ENV_ENCRYPTION_KEY):
        warnings.append(
            "store.encryption_key_file: not set (nor $MAILGATE_ENCRYPTION_KEY): raw mail,"
            " envelope bodies and attachments are stored unencrypted (`mailgate keys"
            " new-encryption-key FILE` makes a key)"
        )
    return warnings


def _reply_from_warnings(cfg: Config) -> list[str]:
    """Tenants whose auto-replies have no explicit From (``[reply] tenant_from``)."""
    reply = cfg.reply
    if not reply.enabled:
        return []
    explicit = set(reply.tenant_from) if isinstance(reply.tenant_from, dict) else set()
    from_domain = reply.from_.rpartition("@")[2].strip(" >").lower()
    for d in cfg.domains:  # [reply] from is explicit for the tenant of its own domain
        if not d.is_wildcard and d.name.lower().rstrip(".") == from_domain:
            explicit.add(d.tenant or "default")
    tenants: dict[str, None] = {}
    for d in cfg.domains:
        if d.is_wildcard and not d.tenant:
            tenants.update(dict.fromkeys(t.lower() for t in d.tenants))
            if d.open_tenants:
                tenants[f"<any label of {d.name}>"] = None
        else:
            tenants[d.tenant or "default"] = None
    missing = [t for t in tenants if t not in explicit]
    if not missing:
        return []
    return [
        f"reply.tenant_from: no reply From for tenant(s) {', '.join(missing)}; their"
        " acknowledgements come from the address the customer wrote to (or the local part of"
        " reply.from at the tenant's domain), so the Reply-To alias returns to the same tenant"
    ]


def _same_listener(a: str, b: str) -> bool:
    """Whether two listen addresses would fight over one port (port 0: the kernel picks two)."""
    try:
        (host_a, port_a), (host_b, port_b) = parse_hostport(a), parse_hostport(b)
    except ValueError:
        return False
    if port_a != port_b or port_a == 0:
        return False
    wildcard = ("", "*", "0.0.0.0", "::")
    return host_a == host_b or host_a in wildcard or host_b in wildcard


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: dict[str, str] | None = None,
    validators: Sequence[Validator] = (),
) -> Config:
    """Load and validate the config.

    ``path`` None means ``$MAILGATE_CONFIG`` if set, else built-in defaults (mailgate works with
    no file at all). ``$MAILGATE_DATA_DIR`` overrides ``[store] data_dir``.

    Checks here cover the sections this module can judge alone; the subsystems that own
    structured config (stages, rules, webhooks, replies) pass their ``validate`` functions as
    ``validators`` — explicitly, through ``mailgate.app.load_config``: what is checked never
    depends on which modules happen to be imported. Every error is reported (``ConfigErrors``).
    """
    environ = os.environ if env is None else env
    if path is None and environ.get(ENV_CONFIG):
        path = environ[ENV_CONFIG]
    data: dict[str, Any] = {}
    source = "<defaults>"
    text = ""
    if path is not None:
        p = Path(path)
        source = str(p)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{p}: config file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{p}: cannot read config file: {exc}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    loc = _Locator(source, text)
    cfg: Config = _build(Config, data, "", loc)
    if environ.get(ENV_DATA_DIR):
        cfg = dataclasses.replace(
            cfg, store=dataclasses.replace(cfg.store, data_dir=environ[ENV_DATA_DIR])
        )
    if environ.get(ENV_STORE_DSN):
        cfg = dataclasses.replace(
            cfg, store=dataclasses.replace(cfg.store, dsn=environ[ENV_STORE_DSN])
        )
    cfg = dataclasses.replace(cfg, source=source)
    if cfg.store.backend == "postgresql" and environ.get(ENV_ENCRYPTION_KEY):
        raise ConfigError(
            f'${ENV_ENCRYPTION_KEY} is set with backend = "postgresql": {PG_NO_ENCRYPTION}'
        )
    run_checks((_validate, functools.partial(_validate_extensions, validators)), cfg, loc)
    # One spelling per domain from here on (issue 12): A-labels, whatever the file wrote.
    domains = [dataclasses.replace(d, name=domain_to_ascii(d.name)) for d in cfg.domains]
    return dataclasses.replace(cfg, domains=domains)


# A subsystem's check of the config it owns (rules, stages, webhooks, replies): gets the config
# and raises ConfigError or ConfigErrors (the message carries the key path); ``where`` turns a key
# path into "file:line". ``mailgate.app.config_validators`` lists them all.
Validator = typing.Callable[[Config, typing.Callable[[str], str]], None]


def _validate_extensions(validators: Sequence[Validator], cfg: Config, loc: _Locator) -> None:
    errors: list[ConfigError] = []
    for fn in validators:
        try:
            fn(cfg, loc.where)
        except ConfigErrors as exc:
            errors.extend(exc.errors)
        except ConfigError as exc:
            errors.append(exc)
    if errors:
        raise ConfigErrors(errors)


def section_names() -> dict[str, list[str]]:
    """Every documented key per section: the docs test checks each appears in the example file."""
    out: dict[str, list[str]] = {}

    def walk(cls: Any, prefix: str) -> None:
        hints = typing.get_type_hints(cls, include_extras=True)
        for f in dataclasses.fields(cls):
            if f.name in _SKIP_FIELDS:
                continue
            tp = hints[f.name]
            inner = typing.get_args(tp)[0] if typing.get_origin(tp) is list else tp
            key = _toml_key(f.name)
            if dataclasses.is_dataclass(inner):
                walk(inner, f"{prefix}{key}.")
            else:
                out.setdefault(prefix.rstrip(".") or "<top>", []).append(key)

    walk(Config, "")
    return out
