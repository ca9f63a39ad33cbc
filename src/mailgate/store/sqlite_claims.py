"""Spool claims with leases on SQLite (see ``store.ports.SpoolClaims``).

A claim is a write (owner and expiry on the rows) in the writer's next transaction, not fsynced
on its own: lost to a power failure, the message is simply unclaimed and claimed again.
"""

from __future__ import annotations

import sqlite3
import time

from mailgate.store.base import SpooledMessage
from mailgate.store.message_logic import spooled_message
from mailgate.store.ports import DEFAULT_SPOOL_LEASE
from mailgate.store.sqlite_base import SqliteBase
from mailgate.store.sqlite_crypto import open_claimed


class SpoolClaimsMixin(SqliteBase):
    async def claim_spooled(
        self, limit: int, *, owner: str, lease: float = DEFAULT_SPOOL_LEASE, skip: int = 0
    ) -> list[SpooledMessage]:
        """See `SpoolClaims.claim_spooled`: the oldest free rows, leased in one transaction."""

        def write(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            now = time.time()
            seqs = [
                r[0]
                for r in conn.execute(
                    "SELECT seq FROM messages WHERE state = 'spooled'"
                    " AND (lease_until IS NULL OR lease_until < ?) ORDER BY seq LIMIT ? OFFSET ?",
                    (now, limit, skip),
                )
            ]
            if not seqs:
                return []
            marks = ",".join("?" * len(seqs))
            conn.execute(
                f"UPDATE messages SET lease_owner = ?, lease_until = ? WHERE seq IN ({marks})",
                (owner, now + lease, *seqs),
            )
            return list(
                conn.execute(
                    "SELECT m.id, m.received_at, m.tenant, m.mail_from, m.rcpt_to, m.client_ip,"
                    " m.helo, m.tls, m.trace_id, m.auth, m.attempts, r.raw FROM messages m"
                    f" JOIN message_raw r ON r.id = m.id WHERE m.seq IN ({marks}) ORDER BY m.seq",
                    seqs,
                )
            )

        rows: list[sqlite3.Row] = await self._write(write, durable=False)
        return await open_claimed(self, rows, spooled_message)  # decrypted; tampered: quarantined

    async def release_spool_leases(self, owner: str) -> int:
        """See `SpoolClaims.release_spool_leases`."""

        def write(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "UPDATE messages SET lease_owner = NULL, lease_until = NULL"
                " WHERE lease_owner = ? AND state = 'spooled'",
                (owner,),
            )
            return cur.rowcount

        n: int = await self._write(write, durable=False)
        return n

    async def spool_lease_owners(self) -> list[str]:
        """See `SpoolClaims.spool_lease_owners`."""
        rows = await self._read(
            "SELECT DISTINCT lease_owner FROM messages WHERE state = 'spooled'"
            " AND lease_owner IS NOT NULL AND lease_until >= ?",
            (time.time(),),
        )
        return [r[0] for r in rows]
