"""Where the SQLite backend meets the encryption codec (``store.crypto``): opening claimed
raw messages, and quarantining (reason ``integrity``) the ones whose ciphertext fails
authentication instead of letting one bad row stop the ingest worker."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from mailgate.store.base import Intent, SpooledMessage
from mailgate.store.crypto import IntegrityError, NullCodec
from mailgate.store.pipeline import DedupIntent, ThreadIntent
from mailgate.store.sqlite_base import dumps

log = logging.getLogger("mailgate.store")


def quarantine_integrity(conn: sqlite3.Connection, bad: list[tuple[str, str, str]]) -> None:
    """Quarantine ``(msg_id, tenant, error)`` rows with reason ``integrity`` (one transaction)."""
    now = time.time()
    for msg_id, tenant, err in bad:
        cur = conn.execute(
            "UPDATE messages SET state = 'quarantined', last_error = ?, processed_at = ?"
            " WHERE id = ? AND state = 'spooled'",
            (f"integrity: {err}", now, msg_id),
        )
        if not cur.rowcount:
            continue
        conn.execute(
            "INSERT OR REPLACE INTO quarantine (msg_id, tenant, reason, detail, created_at)"
            " VALUES (?, ?, 'integrity', ?, ?)",
            (msg_id, tenant, err, now),
        )
        conn.execute(
            "INSERT INTO audit_log (at, actor, action, target, detail) VALUES (?,?,?,?,?)",
            (now, "store", "quarantine.integrity", msg_id, dumps({"error": err})),
        )


async def open_claimed(
    store: Any,
    rows: list[sqlite3.Row],
    build: Callable[[sqlite3.Row], SpooledMessage],
) -> list[SpooledMessage]:
    """``build`` each claimed row with its raw bytes decrypted; tampered rows are quarantined."""
    codec: NullCodec = store.codec
    out: list[SpooledMessage] = []
    bad: list[tuple[str, str, str]] = []
    for r in rows:
        msg = build(r)
        try:
            raw = codec.open_raw(msg.id, msg.raw)
        except IntegrityError as exc:
            bad.append((msg.id, msg.tenant, str(exc)))
            log.warning(
                "raw message failed its integrity check: quarantined",
                extra={"fields": {"msg_id": msg.id, "error": str(exc)}},
            )
            continue
        out.append(msg if raw is msg.raw else dataclasses.replace(msg, raw=raw))
    if bad:
        await store._write(lambda conn: quarantine_integrity(conn, bad))
    return out


def _mid(value: str) -> str:
    return value.strip().strip("<>").strip()


def index_intents(codec: NullCodec, intents: list[Intent]) -> list[Intent]:
    """With encryption on, dedup keys and thread Message-IDs are stored as keyed hashes
    (``codec.index``); the lookups (``find_duplicate``, ``find_threads``) hash what they seek."""
    if not codec.enabled:
        return intents
    out: list[Intent] = []
    for i in intents:
        if isinstance(i, DedupIntent):
            i = dataclasses.replace(i, key=codec.index(i.key))
        elif isinstance(i, ThreadIntent):
            i = dataclasses.replace(
                i,
                message_id=codec.index(_mid(i.message_id)) if i.message_id else i.message_id,
                awaits=codec.index(_mid(i.awaits)) if i.awaits else i.awaits,
            )
        out.append(i)
    return out
