"""Erasure on request for the SQLite backend (see ``store.governance``).

How the bytes really go away, not only the rows:

* every writing connection runs with ``PRAGMA secure_delete = ON`` (``writer.connect``), so a
  deleted or updated cell is zeroed in its page and freed pages are zeroed too;
* after the erase commits, the WAL is checkpointed and truncated to zero bytes (the old page
  images that still held the data were in it);
* attachment blobs referenced by no remaining message are overwritten with zeros and unlinked;
* finally the database and WAL files are scanned for the address itself. A database written
  before ``secure_delete`` was on may keep stale copies in free space: then it is VACUUMed
  (rebuilt without free space) and checkpointed again.

Matching is done in two passes so the writer is not held for a full scan: candidates are found
with a read (any message whose envelope sender, recipients, envelope JSON or raw bytes contain
the address, then checked against the parsed author/recipient headers), and the write
transaction re-checks only messages that arrived after that read.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mailgate.store.crypto import IntegrityError, NullCodec
from mailgate.store.delivery import event_id_for
from mailgate.store.governance import (
    ERASED_EVENT,
    ErasureReport,
    begin_erasure,
    envelope_hashes,
    erasure_notices,
    leave_thread,
    normalise_address,
    open_message,
    scrub_blobs,
    subject_key,
)
from mailgate.store.sqlite_base import SqliteBase, dumps
from mailgate.store.sqlite_retention import RetentionMixin, checkpoint_truncate
from mailgate.store.writer import connect

CHUNK = 400  # ids per ``IN (…)``: well below SQLite's bound-parameter limit
NOTICE_STATE = "notice"  # the row that carries a subject.erased event (not a message)

_SCAN = (
    "SELECT m.seq, m.id, m.tenant, m.mail_from, m.rcpt_to, m.envelope, m.sealed, r.raw"
    " FROM messages m"
    " LEFT JOIN message_raw r ON r.id = m.id"
    " WHERE m.seq > ? AND m.state != 'notice' AND (? IS NULL OR m.tenant = ?)"
)
PAGE = 200  # messages read (and, encrypted, opened) at a time: memory stays bounded
_CANDIDATES = (
    _SCAN + " AND (instr(lower(m.mail_from), ?) > 0 OR instr(lower(m.rcpt_to), ?) > 0"
    " OR instr(lower(m.envelope), ?) > 0 OR instr(lower(r.raw), ?) > 0)"
    " ORDER BY m.seq LIMIT ?"
)


def _candidates(
    codec: NullCodec, since: int, tenant: str | None, addr: str
) -> tuple[str, tuple[Any, ...]]:
    """One page of the candidate query after ``since``: plain stores are searched for the
    address; in an encrypted store nothing holds it in clear, so every message of the tenant is
    opened and checked (`_classify`)."""
    if codec.enabled:
        return _SCAN + " ORDER BY m.seq LIMIT ?", (since, tenant, tenant, PAGE)
    return _CANDIDATES, (since, tenant, tenant, addr, addr, addr, addr, PAGE)


def _classify(
    rows: Sequence[sqlite3.Row],
    addr: str,
    codec: NullCodec,
    owners: dict[str, str],
    report: ErasureReport,
) -> None:
    """Messages naming the subject go to ``owners``; the others that mention the address in
    their content are counted (``mentioned_elsewhere``: kept)."""
    for r in rows:
        message = open_message(r, codec)  # once: an encrypted store's rows are opened here
        if message.names(addr):
            owners[r["id"]] = r["tenant"]
        elif not codec.enabled or message.mentions(addr):
            report.mentioned_elsewhere += 1


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _count_in(conn: sqlite3.Connection, sql: str, ids: Sequence[str]) -> int:
    """Sum of ``sql`` (a COUNT with one ``{marks}`` placeholder) over ``ids`` in chunks."""
    total = 0
    for part in _chunks(ids):
        total += int(conn.execute(sql.format(marks=_marks(len(part))), tuple(part)).fetchone()[0])
    return total


def file_contains(path: Path, needle: bytes) -> bool:
    """Case-insensitive search of ``needle`` in a file, in overlapping 4 MB windows."""
    pattern = re.compile(re.escape(needle), re.IGNORECASE)
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return False
    with fh:
        tail = b""
        while True:
            block = fh.read(4 * 1024 * 1024)
            if not block:
                return False
            if pattern.search(tail + block):
                return True
            tail = block[-len(needle) :]


class GovernanceStoreMixin(SqliteBase):
    """Implements `store.governance.GovernanceStore` for `SqliteStore`."""

    data_dir: Path
    synchronous: str

    # ------------------------------------------------------------------ erasure

    async def erase_subject(
        self,
        address: str,
        *,
        tenant: str | None = None,
        dry_run: bool = False,
        actor: str = "cli",
        notify: dict[str, list[str]] | None = None,
    ) -> ErasureReport:
        """See `GovernanceStore.erase_subject` and the module docstring."""
        addr, report = begin_erasure(address, subject_key(self.data_dir), tenant, dry_run)

        # pass 1, reads a page at a time: every candidate so far, checked against the parsed
        # headers
        owners: dict[str, str] = {}
        last_seq = 0
        while rows := await self._read(*_candidates(self.codec, last_seq, tenant, addr)):
            last_seq = rows[-1]["seq"]
            _classify(rows, addr, self.codec, owners, report)
        ids = list(owners)

        blobs: set[str] = set()

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("PRAGMA secure_delete = ON")
            seq = last_seq  # what arrived after the reads, inside the write transaction
            while late := conn.execute(*_candidates(self.codec, seq, tenant, addr)).fetchall():
                seq = late[-1]["seq"]
                before = set(owners)
                _classify(late, addr, self.codec, owners, report)
                ids.extend(k for k in owners if k not in before)
            blobs.update(self._erase_rows(conn, addr, ids, tenant, report, dry_run=dry_run))
            report.tenants = sorted(set(owners.values()) | ({tenant} if tenant else set()))
            if dry_run:
                return
            self._write_notices(conn, report, owners, notify or {})
            conn.execute(
                "INSERT INTO audit_log (at, actor, action, target, detail) VALUES (?,?,?,?,?)",
                (
                    time.time(),
                    actor,
                    "subject.erase",
                    report.subject_hash,
                    dumps(
                        {
                            "tenants": report.tenants,
                            "messages": report.messages,
                            "events": report.events,
                            "replies": report.replies,
                            "threads_deleted": report.threads_deleted,
                            "blobs": len(blobs),
                        }
                    ),
                ),
            )

        if dry_run:
            # the same code on a read connection of its own, rolled back: nothing changes
            await asyncio.to_thread(self._dry_run, write)
            return report
        await self._write(write)
        report.blobs_deleted, _ = await asyncio.to_thread(
            scrub_blobs, self.data_dir / "attachments", blobs
        )
        report.residue = await self._residue(addr)
        await asyncio.to_thread(self._wipe_free_bytes, addr.encode("utf-8"), report)
        return report

    def _dry_run(self, fn: Any) -> None:
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("BEGIN")
            fn(conn)
        finally:
            conn.execute("ROLLBACK")
            conn.close()

    def _erase_rows(
        self,
        conn: sqlite3.Connection,
        addr: str,
        ids: list[str],
        tenant: str | None,
        report: ErasureReport,
        *,
        dry_run: bool,
    ) -> set[str]:
        """Count (and unless ``dry_run`` delete) everything tied to ``ids``; returns blob hashes
        that no remaining message references."""
        ids[:] = list(dict.fromkeys(ids))
        report.messages = len(ids)
        report.message_ids = list(ids)
        report.events = _count_in(
            conn, "SELECT COUNT(*) FROM events WHERE msg_id IN ({marks})", ids
        )
        report.outbox = _count_in(
            conn,
            "SELECT COUNT(*) FROM outbox o JOIN events e ON e.id = o.event_id"
            " WHERE e.msg_id IN ({marks})",
            ids,
        )
        report.dedup_keys = _count_in(
            conn, "SELECT COUNT(*) FROM dedup_keys WHERE msg_id IN ({marks})", ids
        )
        report.attachments = _count_in(
            conn, "SELECT COUNT(*) FROM attachments WHERE msg_id IN ({marks})", ids
        )
        tenant_clause = " AND tenant = ?" if tenant else ""
        t_params: tuple[str, ...] = (tenant,) if tenant else ()
        hashed = self.codec.index(addr)  # how an encrypted store keeps it where it searches
        reply_ids = {
            r[0]
            for part in _chunks(ids)
            for r in conn.execute(
                f"SELECT id FROM reply_outbox WHERE msg_id IN ({_marks(len(part))})", tuple(part)
            )
        }
        reply_ids |= {
            r[0]
            for r in conn.execute(
                "SELECT id FROM reply_outbox WHERE recipient_key IN (?, ?)" + tenant_clause,
                (addr, hashed, *t_params),
            )
        }
        report.replies = len(reply_ids)

        hashes: set[str] = set()
        thread_ids: set[str] = set()
        for part in _chunks(ids):
            marks = _marks(len(part))
            hashes |= {
                r[0]
                for r in conn.execute(
                    f"SELECT sha256 FROM attachments WHERE msg_id IN ({marks})", tuple(part)
                )
            }
            for r in conn.execute(
                f"SELECT envelope FROM messages WHERE id IN ({marks})", tuple(part)
            ):
                hashes |= envelope_hashes(r[0])
            thread_ids |= {
                r[0]
                for r in conn.execute(
                    f"SELECT thread_id FROM thread_messages WHERE msg_id IN ({marks})", tuple(part)
                )
            }
        thread_ids |= {
            r[0]
            for r in conn.execute(
                "SELECT id FROM threads WHERE (lower(contact) IN (?, ?)"
                " OR instr(lower(participants), ?) > 0 OR instr(participants, ?) > 0)"
                + tenant_clause,
                (addr, hashed, addr, hashed, *t_params),
            )
        }
        if dry_run:
            erased = set(ids)
            for t in thread_ids:
                members = conn.execute(
                    "SELECT msg_id, sender FROM thread_messages WHERE thread_id = ?", (t,)
                ).fetchall()
                gone = all(
                    m[0] in erased or m[1] == hashed or normalise_address(m[1]) == addr
                    for m in members
                )
                if gone:
                    report.threads_deleted += 1
                else:
                    report.threads_updated += 1
            return hashes

        for part in _chunks(ids):
            marks = _marks(len(part))
            p = tuple(part)
            for table in ("thread_messages", "dedup_keys", "quarantine", "labels"):
                conn.execute(f"DELETE FROM {table} WHERE msg_id IN ({marks})", p)
            conn.execute(f"DELETE FROM reply_outbox WHERE msg_id IN ({marks})", p)
            conn.execute(f"DELETE FROM messages WHERE id IN ({marks})", p)  # cascades
        for rid in reply_ids:
            conn.execute("DELETE FROM reply_outbox WHERE id = ?", (rid,))
        conn.execute(
            "DELETE FROM thread_messages WHERE lower(sender) IN (?, ?)" + tenant_clause,
            (addr, hashed, *t_params),
        )
        for thread_id in sorted(thread_ids):
            self._fix_thread(conn, thread_id, addr, report)
        cur = conn.execute(
            "UPDATE audit_log SET target = ?, detail = ? WHERE instr(lower(target), ?) > 0"
            " OR instr(lower(detail), ?) > 0",
            (report.subject_hash, dumps({"masked": "subject.erase"}), addr, addr),
        )
        report.audit_masked = cur.rowcount
        return {h for h in hashes if not self._blob_referenced(conn, h)}

    def _fix_thread(
        self, conn: sqlite3.Connection, thread_id: str, addr: str, report: ErasureReport
    ) -> None:
        """Delete a thread left empty; otherwise drop the subject from its participants and,
        when they started it, hand the contact and subject to the earliest remaining message."""
        row = conn.execute(
            "SELECT contact, participants FROM threads WHERE id = ?", (thread_id,)
        ).fetchone()
        if row is None:
            return
        left = conn.execute(
            "SELECT t.msg_id, t.sender, m.subject FROM thread_messages t"
            " LEFT JOIN messages m ON m.id = t.msg_id WHERE t.thread_id = ? ORDER BY t.at",
            (thread_id,),
        ).fetchall()
        if not left:
            conn.execute("DELETE FROM threads WHERE id = ?", (thread_id,))
            report.threads_deleted += 1
            return
        participants, was_contact = leave_thread(
            row["contact"], row["participants"], {addr, self.codec.index(addr)}, addr
        )
        sets, params = ["participants = ?", "message_count = ?"], [dumps(participants), len(left)]
        if was_contact:
            first = left[0]
            subject = first["subject"]
            if subject is not None and self.codec.enabled:  # sealed under the message's id
                try:
                    plain = self.codec.open_text(f"{first['msg_id']}:subject", subject)
                    subject = self.codec.seal_text(f"{thread_id}:subject", plain)
                except IntegrityError:
                    subject = None
            sets += ["contact = ?", "subject = ?"]
            params += [first["sender"], subject]
        conn.execute(f"UPDATE threads SET {', '.join(sets)} WHERE id = ?", (*params, thread_id))
        report.threads_updated += 1

    @staticmethod
    def _blob_referenced(conn: sqlite3.Connection, sha256: str) -> bool:
        if conn.execute("SELECT 1 FROM attachments WHERE sha256 = ? LIMIT 1", (sha256,)).fetchone():
            return True
        row = conn.execute(
            "SELECT 1 FROM messages WHERE instr(envelope, ?) > 0 LIMIT 1", (sha256,)
        ).fetchone()
        return row is not None

    @staticmethod
    def _write_notices(
        conn: sqlite3.Connection,
        report: ErasureReport,
        owners: dict[str, str],
        notify: dict[str, list[str]],
    ) -> None:
        """One ``subject.erased`` event per tenant: in the polling API and to the subscribed
        webhook targets. Its carrier is a ``notice`` row in ``messages`` (events need one)."""
        now = time.time()
        for notice_id, t, body in erasure_notices(report, owners):
            conn.execute(
                "INSERT INTO messages (id, received_at, tenant, mail_from, rcpt_to, size, state,"
                " processed_at, envelope) VALUES (?,?,?,'','[]',0,?,?,?)",
                (notice_id, now, t, NOTICE_STATE, now, dumps(body)),
            )
            event_id = event_id_for(notice_id, ERASED_EVENT)
            conn.execute(
                "INSERT INTO events (id, msg_id, tenant, type, received_at, created_at)"
                " VALUES (?,?,?,?,?,?)",
                (event_id, notice_id, t, ERASED_EVENT, now, now),
            )
            for target in dict.fromkeys(notify.get(t, [])):
                conn.execute(
                    "INSERT OR IGNORE INTO outbox (event_id, target, next_attempt_at, created_at)"
                    " VALUES (?,?,?,?)",
                    (event_id, target, now, now),
                )
            report.notices.append(notice_id)

    # ------------------------------------------------------------------ making bytes go away

    def checkpoint_truncate(self) -> bool:
        """See `sqlite_retention.checkpoint_truncate`."""
        return checkpoint_truncate(self.path, self.synchronous)

    def _wipe_free_bytes(self, needle: bytes, report: ErasureReport) -> None:
        """Truncate the WAL; VACUUM when the address is still in the file although no row holds
        it (free space written before secure_delete was on)."""
        try:
            if not self.checkpoint_truncate():
                report.notes.append("the WAL was busy: its old pages go at a later checkpoint")
            if report.residue:
                return  # rows that mention the address are kept: the bytes are theirs
            files = [self.path, self.path.with_name(self.path.name + "-wal")]
            if any(file_contains(f, needle) for f in files):
                conn = connect(self.path, synchronous=self.synchronous)
                try:
                    conn.execute("VACUUM")
                finally:
                    conn.close()
                self.checkpoint_truncate()
                report.vacuumed = True
        except sqlite3.Error as exc:  # the rows are erased; only the clean-up of bytes failed
            report.notes.append(
                f"clean-up of free pages failed ({exc}): run `mailgate erase` again"
            )

    async def _residue(self, addr: str) -> dict[str, int]:
        """Rows in any table whose text still contains the address (kept messages that only
        mention it in their content, typically), by ``table.column``."""
        out: dict[str, int] = {}
        tables = await self._read(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
        for t in tables:
            name = t["name"]
            cols = await self._read(f'PRAGMA table_info("{name}")')
            for c in cols:
                if (c["type"] or "").upper() not in ("TEXT", "BLOB", ""):
                    continue
                row = await self._read_one(
                    f'SELECT COUNT(*) AS n FROM "{name}" WHERE instr(lower("{c["name"]}"), ?) > 0',
                    (addr,),
                )
                if row is not None and row["n"]:
                    out[f"{name}.{c['name']}"] = int(row["n"])
        return out


class SqliteGovernance(RetentionMixin, GovernanceStoreMixin):
    """Governance operations on an open `SqliteStore`, sharing its writer and reader.

    A wrapper rather than one more base of `SqliteStore`, so the core store class stays as it
    is; ``app.py`` (and the CLI) build one with ``SqliteGovernance(store)``.
    """

    def __init__(self, store: SqliteBase) -> None:
        self._store = store
        self.path = store.path
        self.data_dir = Path(getattr(store, "data_dir", store.path.parent))
        self.synchronous = str(getattr(store, "synchronous", "FULL"))
        self.codec = store.codec

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return await self._store._read(sql, params)

    async def _write(self, fn: Any, *, durable: bool = True) -> Any:
        return await self._store._write(fn, durable=durable)


def governance_for(store: object) -> SqliteGovernance | None:
    """The governance operations of ``store`` when it is the SQLite backend, else None."""
    return SqliteGovernance(store) if isinstance(store, SqliteBase) else None
