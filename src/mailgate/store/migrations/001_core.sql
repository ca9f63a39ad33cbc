-- Core spool: every message answered 250 is a row here, committed before the 250.
CREATE TABLE messages (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,  -- arrival order
    id           TEXT NOT NULL UNIQUE,               -- msg_<ULID>
    received_at  REAL NOT NULL,
    tenant       TEXT NOT NULL DEFAULT 'default',
    mail_from    TEXT NOT NULL,
    rcpt_to      TEXT NOT NULL,                      -- JSON list
    client_ip    TEXT NOT NULL DEFAULT '',
    helo         TEXT NOT NULL DEFAULT '',
    tls          INTEGER NOT NULL DEFAULT 0,
    trace_id     TEXT NOT NULL DEFAULT '',
    auth         TEXT,                               -- JSON AuthReport, NULL when not checked
    smtp         TEXT,                               -- JSON extra session facts
    size         INTEGER NOT NULL,
    state        TEXT NOT NULL DEFAULT 'spooled',    -- spooled | processed | quarantined | dead
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    processed_at REAL,
    subject      TEXT,
    envelope     TEXT                                -- JSON envelope once processed
);
CREATE INDEX messages_state_seq ON messages(state, seq);
CREATE INDEX messages_tenant_seq ON messages(tenant, seq);

-- Raw bytes apart from the metadata so that scans over messages stay small.
CREATE TABLE message_raw (
    id   TEXT PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    raw  BLOB NOT NULL
);
