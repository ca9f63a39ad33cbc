-- Auto-replies: the SMTP outbox of acknowledgements (one per acknowledged message), every send
-- attempt, and the incident banners operators set per queue. The rate limits count the rows of
-- reply_outbox (suppressed rows excepted), so they need no counters of their own.

CREATE TABLE reply_outbox (
    id              TEXT PRIMARY KEY,                -- rpl_<ULID of the acknowledged message>
    msg_id          TEXT NOT NULL UNIQUE REFERENCES messages(id) ON DELETE CASCADE,
    tenant          TEXT NOT NULL,
    thread_id       TEXT,
    ticket          TEXT,
    queue           TEXT,
    template        TEXT NOT NULL,
    recipient       TEXT NOT NULL,                   -- envelope return path of the original
    recipient_key   TEXT NOT NULL,                   -- lower-cased: what the sender limit counts
    mail_from       TEXT NOT NULL DEFAULT '',        -- '' = MAIL FROM:<> (RFC 3834 section 3.3)
    message_id      TEXT NOT NULL,                   -- Message-ID of the reply
    subject         TEXT,
    draft           TEXT NOT NULL,                   -- headers + rendered bodies (JSON); built,
                                                     -- DKIM-signed and sent by the SMTP worker
    smtputf8        INTEGER NOT NULL DEFAULT 0,
    state           TEXT NOT NULL DEFAULT 'pending', -- pending | sent | dead | suppressed
    reason          TEXT,                            -- why suppressed (a limit hit at commit)
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    locked_until    REAL NOT NULL DEFAULT 0,
    lock_owner      TEXT,
    created_at      REAL NOT NULL,
    sent_at         REAL,
    dead_at         REAL,
    last_code       INTEGER,                         -- last SMTP reply code, NULL: no answer
    last_error      TEXT
);
CREATE INDEX reply_outbox_due ON reply_outbox(state, next_attempt_at);
CREATE INDEX reply_outbox_recipient ON reply_outbox(tenant, recipient_key, created_at);
CREATE INDEX reply_outbox_thread ON reply_outbox(thread_id);
CREATE INDEX reply_outbox_created ON reply_outbox(created_at);

CREATE TABLE reply_attempts (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    reply_id  TEXT NOT NULL REFERENCES reply_outbox(id) ON DELETE CASCADE,
    attempt   INTEGER NOT NULL,
    at        REAL NOT NULL,
    code      INTEGER,
    error     TEXT,
    outcome   TEXT NOT NULL                          -- sent | retry | dead
);
CREATE INDEX reply_attempts_reply ON reply_attempts(reply_id, id);

CREATE TABLE reply_banners (
    queue   TEXT PRIMARY KEY,                        -- '' = every queue
    text    TEXT NOT NULL,
    set_at  REAL NOT NULL,
    set_by  TEXT NOT NULL DEFAULT ''
);
