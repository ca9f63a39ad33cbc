-- The auto-reply outbox (SQLite 004 and 005's recipient_domain) in PostgreSQL's dialect.
CREATE TABLE reply_outbox (
    seq              BIGSERIAL UNIQUE,                -- queue order (SQLite: rowid)
    id               TEXT PRIMARY KEY,
    msg_id           TEXT NOT NULL UNIQUE REFERENCES messages(id) ON DELETE CASCADE,
    tenant           TEXT NOT NULL,
    thread_id        TEXT,
    ticket           TEXT,
    queue            TEXT,
    template         TEXT NOT NULL,
    recipient        TEXT NOT NULL,
    recipient_key    TEXT NOT NULL,
    recipient_domain TEXT NOT NULL DEFAULT '',
    mail_from        TEXT NOT NULL DEFAULT '',
    message_id       TEXT NOT NULL,
    subject          TEXT,
    draft            TEXT NOT NULL,
    smtputf8         BOOLEAN NOT NULL DEFAULT false,
    state            TEXT NOT NULL DEFAULT 'pending',
    reason           TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  DOUBLE PRECISION NOT NULL,
    locked_until     DOUBLE PRECISION NOT NULL DEFAULT 0,
    lock_owner       TEXT,
    created_at       DOUBLE PRECISION NOT NULL,
    sent_at          DOUBLE PRECISION,
    dead_at          DOUBLE PRECISION,
    last_code        INTEGER,
    last_error       TEXT
);
CREATE INDEX reply_outbox_due ON reply_outbox(state, next_attempt_at);
CREATE INDEX reply_outbox_recipient ON reply_outbox(tenant, recipient_key, created_at);
CREATE INDEX reply_outbox_recipient_any ON reply_outbox(recipient_key, created_at);
CREATE INDEX reply_outbox_domain ON reply_outbox(recipient_domain, created_at);
CREATE INDEX reply_outbox_thread ON reply_outbox(thread_id);
CREATE INDEX reply_outbox_created ON reply_outbox(created_at);

CREATE TABLE reply_attempts (
    id        BIGSERIAL PRIMARY KEY,
    reply_id  TEXT NOT NULL REFERENCES reply_outbox(id) ON DELETE CASCADE,
    attempt   INTEGER NOT NULL,
    at        DOUBLE PRECISION NOT NULL,
    code      INTEGER,
    error     TEXT,
    outcome   TEXT NOT NULL,
    node      TEXT
);
CREATE INDEX reply_attempts_reply ON reply_attempts(reply_id, id);

CREATE TABLE reply_banners (
    queue   TEXT PRIMARY KEY,
    text    TEXT NOT NULL,
    set_at  DOUBLE PRECISION NOT NULL,
    set_by  TEXT NOT NULL DEFAULT ''
);
