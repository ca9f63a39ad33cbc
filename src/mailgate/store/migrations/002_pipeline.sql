-- Pipeline area: dedup index, threads, quarantine, operator audit log.

-- First message seen per dedup key (a Message-ID, or a content hash when it has none), per tenant.
CREATE TABLE dedup_keys (
    tenant   TEXT NOT NULL,
    key      TEXT NOT NULL,          -- "mid:<id@host>" or "hash:<sha256>"
    msg_id   TEXT NOT NULL,
    seen_at  REAL NOT NULL,
    PRIMARY KEY (tenant, key)
) WITHOUT ROWID;

-- One row per conversation; ticket numbers are unique per tenant.
CREATE TABLE threads (
    id            TEXT PRIMARY KEY,  -- thr_<ULID of the first message>
    tenant        TEXT NOT NULL,
    ticket        TEXT,
    contact       TEXT NOT NULL,     -- sender of the first message
    participants  TEXT NOT NULL,     -- JSON list of addresses allowed to continue the thread
    subject       TEXT,
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL,
    message_count INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX threads_ticket ON threads(tenant, ticket) WHERE ticket IS NOT NULL;

-- Message-ID -> thread, for In-Reply-To / References lookups.
CREATE TABLE thread_messages (
    tenant      TEXT NOT NULL,
    message_id  TEXT NOT NULL,       -- RFC 5322 Message-ID without angle brackets
    thread_id   TEXT NOT NULL,
    msg_id      TEXT NOT NULL,       -- our msg_<ULID>
    sender      TEXT NOT NULL,
    at          REAL NOT NULL,
    PRIMARY KEY (tenant, message_id)
) WITHOUT ROWID;
CREATE INDEX thread_messages_thread ON thread_messages(thread_id);
CREATE INDEX thread_messages_msg ON thread_messages(msg_id);

-- Messages held for an operator; the raw bytes stay in message_raw.
CREATE TABLE quarantine (
    msg_id       TEXT PRIMARY KEY,
    tenant       TEXT NOT NULL,
    reason       TEXT NOT NULL,
    detail       TEXT NOT NULL DEFAULT '',
    created_at   REAL NOT NULL,
    released_at  REAL,
    released_by  TEXT
);
CREATE INDEX quarantine_open ON quarantine(released_at, created_at);

-- Every operator action: who, when, what.
CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      REAL NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    detail  TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON audit_log(at);
