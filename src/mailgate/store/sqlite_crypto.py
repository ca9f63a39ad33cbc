"""Where the SQLite backend meets the encryption codec (``store.crypto``): opening claimed
raw messages, and quarantining (reason ``integrity``) the ones whose ciphertext fails
authentication instead of letting one bad row stop the ingest worker."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from typing import Any

from mailgate.store.base import Intent, SpooledMessage
from mailgate.store.crypto import REPLY_SEALED_COLUMNS, IntegrityError, NullCodec
from mailgate.store.pipeline import DedupIntent, ThreadIntent
from mailgate.store.replies import ReplyIntent, stored_columns
from mailgate.store.rows import Row
from mailgate.store.sqlite_base import apply_intents, dumps

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
    build: Callable[[Row], SpooledMessage],
) -> list[SpooledMessage]:
    """``build`` each claimed row with its raw bytes decrypted; tampered rows are quarantined."""
    codec: NullCodec = store.codec
    out: list[SpooledMessage] = []
    bad: list[tuple[str, str, str]] = []
    for r in rows:
        try:
            msg = build(codec.open_columns(r["id"], r))
        except IntegrityError as exc:  # a sealed address column that does not open
            bad.append((r["id"], r["tenant"], str(exc)))
            log.warning(
                "message columns failed their integrity check: quarantined",
                extra={"fields": {"msg_id": r["id"], "error": str(exc)}},
            )
            continue
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
    """With encryption on, what the intents store about people is hashed or sealed: dedup keys,
    thread Message-IDs and the thread's contact and participants become keyed hashes
    (``codec.index``; the lookups hash what they seek, `ThreadRef.admits` the sender), the
    thread's subject is sealed, and a reply's outbox columns are prepared by `seal_reply`."""
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
                sender=codec.index(i.sender) if i.sender else "",
                participants=tuple(codec.index(p) for p in i.participants if p),
                subject=(
                    codec.seal_text(f"{i.thread_id}:subject", i.subject)
                    if i.subject is not None
                    else None
                ),
            )
        elif isinstance(i, ReplyIntent):
            i = dataclasses.replace(i, stored=seal_reply(codec, i))
        out.append(i)
    return out


def seal_reply(codec: NullCodec, intent: ReplyIntent) -> dict[str, str]:
    """The outbox columns of a reply with encryption on: what the SMTP worker must send again
    (recipient, envelope sender, subject, draft) sealed under the reply's id, the return path
    and its domain (what the rate limits count) as keyed hashes."""
    plain = stored_columns(intent)
    out = {
        k: codec.seal_text(f"{intent.reply_id}:{k}", plain[k])
        for k in REPLY_SEALED_COLUMNS
        if k in plain  # last_error is written by the sender, not by the intent
    }
    out["recipient_key"] = codec.index(plain["recipient_key"])
    out["recipient_domain"] = codec.index(plain["recipient_domain"])
    return out


def sealed_subject(codec: NullCodec, msg_id: str, envelope: Mapping[str, Any]) -> str | None:
    """The ``messages.subject`` column as stored (sealed with encryption on)."""
    subject = envelope.get("subject")
    return None if subject is None else codec.seal_text(f"{msg_id}:subject", str(subject))


def apply_sealed(
    conn: sqlite3.Connection,
    codec: NullCodec,
    msg_id: str,
    envelope: dict[str, Any],
    indexed: list[Intent],
) -> None:
    """`apply_intents` (already through `index_intents`) beside an envelope stored sealed.

    The reply applier rewrites the stored envelope's ``reply`` field in place when it
    suppresses a reply (``apply_reply``); with encryption on that field is inside the sealed
    fields, so the envelope is sealed and written again in the same transaction (rare: only a
    reply suppressed at commit)."""
    before = envelope.get("reply")
    apply_intents(conn, msg_id, envelope, indexed)
    after = envelope.get("reply")
    if not codec.enabled or after is before or after is None:
        return
    env_json, sealed = codec.seal_envelope(msg_id, envelope)
    conn.execute(
        "UPDATE messages SET envelope = ?, sealed = ? WHERE id = ? AND envelope IS NOT NULL",
        (env_json, sealed, msg_id),
    )
