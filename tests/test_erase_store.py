"""Erasure against a store written before ``secure_delete`` was on (issue 15): stale copies of
the address in free pages are found by the byte scan and removed by a VACUUM."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from mailgate.store.base import SpoolRecord
from mailgate.store.sqlite_governance import SqliteGovernance, file_contains
from tests.support.delivery import open_store

ALICE = b"alice.stale@example.org"


async def test_stale_free_pages_are_vacuumed(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        raw = b"From: " + ALICE + b"\r\nTo: support@example.test\r\n\r\n" + b"old body " * 2000
        await store.spool(
            SpoolRecord(
                id="msg_01STALE",
                received_at=time.time(),
                mail_from=ALICE.decode(),
                rcpt_to=["support@example.test"],
                client_ip="127.0.0.1",
                helo="x",
                tls=False,
                raw=raw,
            )
        )
        # an older mailgate deleted it without secure_delete: the bytes stay in free pages
        conn = sqlite3.connect(store.path, isolation_level=None)
        conn.execute("PRAGMA secure_delete = OFF")
        conn.execute("DELETE FROM message_raw WHERE id = 'msg_01STALE'")
        conn.execute("DELETE FROM messages WHERE id = 'msg_01STALE'")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        assert file_contains(store.path, ALICE)

        report = await SqliteGovernance(store).erase_subject(ALICE.decode())
        assert report.messages == 0 and report.residue == {}
        assert report.vacuumed is True
        assert not file_contains(store.path, ALICE)
        wal = store.path.with_name(store.path.name + "-wal")
        assert not wal.exists() or not file_contains(wal, ALICE)

        again = await SqliteGovernance(store).erase_subject(ALICE.decode())
        assert again.vacuumed is False  # nothing left to find: no second VACUUM
