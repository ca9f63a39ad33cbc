"""Data governance port: erasure on request (GDPR Art. 17) and what it reports.

Why a port of its own: erasure cuts across every area of the store (messages, raw bytes,
events, outboxes, threads, dedup, blobs), so one method that knows all of them is safer than
asking each area in turn and hoping none was forgotten. The API and the CLI see only this
protocol; ``store.sqlite_governance`` implements it for SQLite, ``store.postgres.erasure``
for PostgreSQL.

The audit entry and the ``subject.erased`` notice never hold the address itself, only
``subject_hash``: an HMAC-SHA256 of the normalised address under a key that lives in
``<data_dir>/keys/subject-hash-key`` (on PostgreSQL: a secret shared through the database, so
every node computes the same hash). An operator who is asked "did you erase alice@…?" can
recompute it; someone who reads the audit log cannot reverse it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses
from pathlib import Path
from typing import Any, Protocol

from mailgate.config import WebhookConfig
from mailgate.envelope import new_id, utc_now_iso
from mailgate.store.base import StoreError
from mailgate.store.blobs import BlobStore
from mailgate.store.crypto import NULL_CODEC, IntegrityError, NullCodec
from mailgate.store.private import make_private_dirs
from mailgate.store.rows import KeyedRow

SUBJECT_KEY_FILE = "subject-hash-key"
ERASED_EVENT = "subject.erased"
# Headers that name a person as the author or a recipient of a message.
ADDRESS_HEADERS = ("from", "sender", "reply-to", "to", "cc", "bcc", "resent-from", "resent-to")


def normalise_address(address: str) -> str:
    """The form addresses are compared in: trimmed, no angle brackets, lower case."""
    return address.strip().strip("<>").strip().lower()


def valid_address(address: str) -> bool:
    """A plausible single mailbox (``local@domain``): erasing by a pattern is refused."""
    a = normalise_address(address)
    local, at, domain = a.rpartition("@")
    return bool(at and local and domain and "." in domain) and not any(
        c in a for c in " \t\r\n,;%*?\x00"
    )


def subject_key(data_dir: str | Path) -> bytes:
    """The HMAC key for subject hashes, created (32 random bytes, 0600) on first use."""
    folder = make_private_dirs(Path(data_dir) / "keys")
    path = folder / SUBJECT_KEY_FILE
    try:
        value = path.read_text(encoding="ascii").strip()
        if value:
            return bytes.fromhex(value)
    except FileNotFoundError:
        pass
    value = secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it meanwhile
        return bytes.fromhex(path.read_text(encoding="ascii").strip())
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(value + "\n")
    return bytes.fromhex(value)


def subject_hash(key: bytes, address: str) -> str:
    """``hmac-sha256:<hex>`` of the normalised address (see the module docstring)."""
    mac = hmac.new(key, normalise_address(address).encode("utf-8"), hashlib.sha256).hexdigest()
    return f"hmac-sha256:{mac}"


def header_addresses(raw: bytes) -> set[str]:
    """Normalised addresses in the author and recipient headers of ``raw`` (headers only)."""
    try:
        msg = BytesHeaderParser(policy=compat32).parsebytes(raw[:262144])
    except Exception:  # a header block Python cannot parse names nobody
        return set()
    values: list[str] = []
    for name in ADDRESS_HEADERS:
        values.extend(str(v) for v in msg.get_all(name, []) or [])
    return {normalise_address(addr) for _, addr in getaddresses(values) if "@" in addr}


@dataclass(frozen=True)
class OpenedMessage:
    """A ``messages`` row (joined with its raw bytes) as erasure reads it: each part opened on
    its own, so one that fails its integrity check does not hide the others (``intact`` says
    whether every part opened)."""

    mail_from: str
    rcpt_to: str
    envelope: str
    raw: bytes | None
    intact: bool

    def names(self, addr: str) -> bool:
        """True when ``addr`` is the envelope sender, an envelope recipient or in an address
        header (a message whose raw bytes do not open is matched by the rest only)."""
        if normalise_address(self.mail_from or "") == addr:
            return True
        try:
            rcpts = json.loads(self.rcpt_to or "[]")
        except ValueError:
            rcpts = []
        if any(normalise_address(str(r)) == addr for r in rcpts):
            return True
        if addr in envelope_addresses(self.envelope):
            return True
        return self.raw is not None and addr in header_addresses(self.raw)

    def mentions(self, addr: str) -> bool:
        """Whether ``addr`` occurs anywhere in it (what a plain store's SQL finds with
        ``instr``); a message that did not wholly open mentions nobody."""
        hay = f"{self.mail_from}\n{self.rcpt_to}\n{self.envelope}".lower()
        return self.intact and (addr in hay or addr.encode() in (self.raw or b"").lower())


def open_message(row: KeyedRow, codec: NullCodec = NULL_CODEC) -> OpenedMessage:
    """``row`` opened part by part (``sealed`` may be absent: PostgreSQL)."""
    intact = True
    try:
        cols = codec.open_columns(row["id"], row)
    except IntegrityError:
        cols, intact = {"mail_from": "", "rcpt_to": "[]"}, False
    sealed = row["sealed"] if "sealed" in row.keys() else None  # noqa: SIM118 (sqlite3.Row)
    try:
        envelope = codec.open_envelope_json(row["id"], row["envelope"] or "{}", sealed)
    except (IntegrityError, ValueError):
        envelope, intact = "{}", False
    raw: bytes | None = None
    if row["raw"] is not None:
        try:
            raw = codec.open_raw(row["id"], bytes(row["raw"]))
        except IntegrityError:
            intact = False
    return OpenedMessage(cols["mail_from"], cols["rcpt_to"], envelope, raw, intact)


def names_subject(row: KeyedRow, addr: str, codec: NullCodec = NULL_CODEC) -> bool:
    """True when ``addr`` is the envelope sender, an envelope recipient or in an address header
    of a ``messages`` row (see `OpenedMessage.names`)."""
    return open_message(row, codec).names(addr)


ENVELOPE_ADDRESS_FIELDS = ("from", "sender", "replyTo", "to", "cc", "bcc")


def _json_object(text: str | None) -> dict[str, Any] | None:
    """A stored envelope's JSON object; None when there is none or it does not parse."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def envelope_addresses(envelope_json: str | None) -> set[str]:
    """Normalised addresses in the envelope's author and recipient fields (its opened JSON: so
    a message whose raw bytes cannot be read is still found)."""
    env = _json_object(envelope_json)
    out: set[str] = set()
    stack = [env.get(k) for k in ENVELOPE_ADDRESS_FIELDS] if env is not None else []
    while stack:
        v = stack.pop()
        if isinstance(v, str) and "@" in v:
            out.add(normalise_address(v))
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.values())
    return out


def envelope_hashes(envelope_json: str | None) -> set[str]:
    """The attachment hashes an envelope names (its ``attachments``: not sealed, SQL reads them)."""
    env = _json_object(envelope_json)
    out = set()
    for att in env.get("attachments") or [] if env is not None else []:
        if isinstance(att, dict) and isinstance(att.get("sha256"), str):
            out.add(att["sha256"])
    return out


def scrub_file(path: Path) -> None:
    """Overwrite a blob with zeros, then unlink it (a copy-on-write filesystem may keep blocks)."""
    try:
        size = path.stat().st_size
        with open(path, "r+b") as fh:
            fh.write(b"\0" * size)
            fh.flush()
            os.fsync(fh.fileno())
        path.unlink()
    except FileNotFoundError:
        pass


def scrub_blobs(folder: Path, hashes: Iterable[str]) -> tuple[int, int]:
    """Scrub the attachment files of ``hashes`` under ``folder`` (a `BlobStore` root): how many
    there were and their bytes. A hash without a file (or not a hash) is skipped."""
    blobs = BlobStore(folder)
    files = size = 0
    for h in sorted(hashes):
        try:
            path = blobs.path_for(h)
            n = path.stat().st_size
        except (ValueError, FileNotFoundError):
            continue
        scrub_file(path)
        files += 1
        size += n
    return files, size


def begin_erasure(
    address: str, key: bytes, tenant: str | None, dry_run: bool
) -> tuple[str, ErasureReport]:
    """The normalised address and the empty report of an erasure; one that is not a single
    complete address is refused (nobody erases by pattern)."""
    addr = normalise_address(address)
    if not valid_address(addr):
        raise StoreError("erase takes one complete address like alice@example.com")
    return addr, ErasureReport(subject_hash(key, addr), [tenant] if tenant else [], dry_run)


def leave_thread(
    contact: str | None, participants: str | None, gone: set[str], addr: str
) -> tuple[list[str], bool]:
    """A thread's participants (its stored JSON list) without the erased person, and whether
    they were its contact. ``gone``: the forms the store keeps the address in (as it is, or
    its keyed hash); stored values are also compared normalised against ``addr``."""
    try:
        listed = [str(p) for p in json.loads(participants or "[]")]
    except ValueError:
        listed = []
    kept = [p for p in listed if p not in gone and normalise_address(p) != addr]
    was_contact = contact in gone or normalise_address(contact or "") == addr
    return kept, was_contact


def erasure_notices(
    report: ErasureReport, owners: dict[str, str]
) -> list[tuple[str, str, dict[str, Any]]]:
    """One ``subject.erased`` notice per tenant of the erasure: (the notice's message id, the
    tenant, its body). The body names the erased messages and the subject's hash, never the
    address."""
    by_tenant: dict[str, list[str]] = {t: [] for t in report.tenants}
    for msg_id, t in owners.items():
        by_tenant.setdefault(t, []).append(msg_id)
    out = []
    for t, msg_ids in sorted(by_tenant.items()):
        notice_id = new_id("msg")
        body = {
            "type": ERASED_EVENT,
            "id": notice_id,
            "tenant": t,
            "subjectHash": report.subject_hash,
            "messageIds": msg_ids,
            "erasedAt": utc_now_iso(),
        }
        out.append((notice_id, t, body))
    return out


@dataclass
class ErasureReport:
    """What an erasure removed (or, with ``dry_run``, would remove). Holds no personal data."""

    subject_hash: str
    tenants: list[str]
    dry_run: bool
    messages: int = 0
    message_ids: list[str] = field(default_factory=list)
    events: int = 0
    outbox: int = 0
    replies: int = 0
    threads_deleted: int = 0
    threads_updated: int = 0
    dedup_keys: int = 0
    attachments: int = 0
    blobs_deleted: int = 0
    audit_masked: int = 0
    mentioned_elsewhere: int = 0  # messages kept: they mention the address only in their body
    residue: dict[str, int] = field(default_factory=dict)  # table.column -> rows still matching
    vacuumed: bool = False
    notices: list[str] = field(default_factory=list)  # ids of the subject.erased notices
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


class GovernanceStore(Protocol):
    async def erase_subject(
        self,
        address: str,
        *,
        tenant: str | None = None,
        dry_run: bool = False,
        actor: str = "cli",
        notify: dict[str, list[str]] | None = None,
    ) -> ErasureReport:
        """Remove every message ``address`` sent or received (in ``tenant``, or all tenants).

        ``notify`` maps a tenant to its webhook targets subscribed to ``subject.erased``.
        """


def erasure_targets(webhooks: list[WebhookConfig]) -> dict[str, list[str]]:
    """Per tenant, the enabled webhook targets that subscribed to ``subject.erased``."""
    out: dict[str, list[str]] = {}
    for w in webhooks:
        if w.enabled and ERASED_EVENT in w.events:
            out.setdefault(w.tenant, []).append(w.name or w.url)
    return out
