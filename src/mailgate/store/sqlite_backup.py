"""Backups of a SQLite data dir: online snapshot, restore into an empty dir, consistency check.

``backup``: SQLite's online backup API copies the database in one step, inside one read
transaction: a consistent snapshot taken while ``serve`` keeps committing (WAL readers do not
block writers). The attachment store is content-addressed and its files never change, so
copying the files that exist after the snapshot gives every blob the snapshot references (a
blob added later is a harmless extra; one erased or purged in between is reported as missing
and is derivable again from the raw message). ``keys/`` goes along: signed attachment URLs and
subject hashes stay valid after a restore. A ``backup.json`` manifest records the counts and
the database's SHA-256.

``check``: ``PRAGMA integrity_check``, every stored raw message readable and of its recorded
size, every blob file's content matching its name, every attachment row's blob present.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailgate import __version__
from mailgate.store.check import CheckReport, check_blob_files
from mailgate.store.crypto import NULL_CODEC, IntegrityError, NullCodec
from mailgate.store.private import FILE_MODE, make_private_dirs, write_private_file
from mailgate.store.writer import connect

DB_NAME = "mailgate.sqlite"
MANIFEST = "backup.json"
COPIED_DIRS = ("attachments", "keys")


class BackupError(Exception):
    """A backup, restore or check could not be done (message is for the operator)."""


@dataclass
class BackupReport:
    dest: str
    messages: int = 0
    db_bytes: int = 0
    blobs: int = 0
    blob_bytes: int = 0
    missing_blobs: int = 0
    seconds: float = 0.0

    @property
    def megabytes_per_second(self) -> float:
        total = (self.db_bytes + self.blob_bytes) / 1e6
        return total / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["mb_per_s"] = round(self.megabytes_per_second, 1)
        return out


def _empty_dir(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def _copy_private(src: Path, dst: Path) -> int:
    make_private_dirs(dst.parent)
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
        os.fchmod(fout.fileno(), FILE_MODE)
        shutil.copyfileobj(fin, fout, 1024 * 1024)
        fout.flush()
        os.fsync(fout.fileno())
    return dst.stat().st_size


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1024 * 1024), b""):
            h.update(block)
    return h.hexdigest()


def _referenced_blobs(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT DISTINCT sha256 FROM attachments")}


def backup(data_dir: Path, dest: Path) -> BackupReport:
    """Snapshot ``data_dir`` into the new or empty directory ``dest`` (see the module docstring)."""
    started = time.monotonic()
    src_db = data_dir / DB_NAME
    if not src_db.is_file():
        raise BackupError(f"no mailgate store at {data_dir}")
    if not _empty_dir(dest):
        raise BackupError(f"{dest} is not empty: back up into a new directory")
    make_private_dirs(dest)
    report = BackupReport(dest=str(dest))
    src = connect(src_db, synchronous="NORMAL", readonly=True)
    dst_path = dest / DB_NAME
    write_private_file(dst_path, b"")
    dst = sqlite3.connect(str(dst_path), isolation_level=None)
    try:
        src.backup(dst)  # one step: one read transaction, one consistent snapshot
        dst.execute("PRAGMA journal_mode = DELETE")  # a backup is one self-contained file
        report.messages = dst.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
        wanted = _referenced_blobs(dst)
    finally:
        dst.close()
        src.close()
    report.db_bytes = dst_path.stat().st_size
    for name in COPIED_DIRS:
        root = data_dir / name
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.name.startswith(".tmp-"):
                continue
            size = _copy_private(path, dest / path.relative_to(data_dir))
            if name == "attachments":
                report.blobs += 1
                report.blob_bytes += size
                wanted.discard(path.name)
    report.missing_blobs = len(wanted)
    report.seconds = time.monotonic() - started
    manifest = {
        "mailgate": __version__,
        "created_at": time.time(),
        "messages": report.messages,
        "db_sha256": _sha256_file(dst_path),
        "blobs": report.blobs,
        "missing_blobs": sorted(wanted),
    }
    write_private_file(dest / MANIFEST, json.dumps(manifest, indent=2).encode() + b"\n")
    return report


def restore(src: Path, data_dir: Path) -> dict[str, Any]:
    """Copy the backup ``src`` into the new or empty ``data_dir``; returns its manifest."""
    try:
        manifest: dict[str, Any] = json.loads((src / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise BackupError(f"{src} is not a mailgate backup (no readable {MANIFEST})") from exc
    if not _empty_dir(data_dir):
        raise BackupError(f"{data_dir} is not empty: restore into a new data dir")
    if _sha256_file(src / DB_NAME) != manifest.get("db_sha256"):
        raise BackupError(f"{src / DB_NAME} does not match the backup's manifest (damaged?)")
    make_private_dirs(data_dir)
    _copy_private(src / DB_NAME, data_dir / DB_NAME)
    for name in COPIED_DIRS:
        root = src / name
        if root.is_dir():
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    _copy_private(path, data_dir / path.relative_to(src))
    return manifest


def _has_column(conn: sqlite3.Connection, table: str, column: str) -> bool:
    return any(r[1] == column for r in conn.execute(f"PRAGMA table_info({table})"))


def check(data_dir: Path, codec: NullCodec = NULL_CODEC) -> CheckReport:
    """See the module docstring; ``problems`` lists what is wrong (empty: all good)."""
    db = data_dir / DB_NAME
    if not db.is_file():
        raise BackupError(f"no mailgate store at {data_dir}")
    report = CheckReport()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 10000")
        rows = conn.execute("PRAGMA integrity_check").fetchall()
        report.integrity = "; ".join(str(r[0]) for r in rows)
        if report.integrity != "ok":
            report.problems.append(f"integrity_check: {report.integrity[:500]}")
        sealed_col = "m.sealed" if _has_column(conn, "messages", "sealed") else "NULL"
        conn.row_factory = sqlite3.Row
        for row in conn.execute(
            "SELECT m.id, m.size, m.purged, m.mail_from, m.rcpt_to, m.subject, m.auth, m.smtp,"
            f" m.envelope, {sealed_col} AS sealed, r.raw FROM messages m"
            " LEFT JOIN message_raw r ON r.id = m.id WHERE m.state != 'notice'"
        ):
            msg_id, size, purged, raw = row["id"], row["size"], row["purged"], row["raw"]
            if codec.enabled:  # the sealed columns and envelope open (else: tampered)
                try:
                    codec.open_columns(msg_id, row)
                    if row["envelope"] is not None:
                        codec.open_envelope_json(msg_id, row["envelope"], row["sealed"])
                except IntegrityError as exc:
                    report.problems.append(f"{msg_id}: envelope or address columns {exc}")
            # the bytes themselves, not length(): that can be answered without reading them
            try:
                raw_len = None if raw is None else len(codec.open_raw(msg_id, bytes(raw)))
            except IntegrityError as exc:
                report.problems.append(f"{msg_id}: raw message {exc}")
                continue
            report.messages += 1
            if raw_len is None:
                if "raw" in (purged or ""):
                    report.raw_purged += 1
                else:
                    report.problems.append(f"{msg_id}: raw message missing")
                continue
            report.raw_checked += 1
            if raw_len != size:
                report.problems.append(f"{msg_id}: raw is {raw_len} bytes, {size} recorded")
        referenced = _referenced_blobs(conn)
    except sqlite3.DatabaseError as exc:
        report.problems.append(f"database unreadable: {exc}")
        return report
    finally:
        conn.close()
    present = check_blob_files(data_dir / "attachments", report, codec)
    for sha in sorted(referenced - present):
        report.problems.append(f"attachment blob {sha[:16]}…: referenced but missing")
    return report
