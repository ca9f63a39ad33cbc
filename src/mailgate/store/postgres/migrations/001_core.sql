-- The whole schema of the SQLite migrations 001..007, in PostgreSQL's dialect (issue 13).
-- Times are epoch seconds (double precision) as on SQLite, JSON columns are text: the same
-- records come out of both backends.

CREATE TABLE messages (
    seq          BIGSERIAL PRIMARY KEY,               -- arrival order (per node: roughly)
    id           TEXT NOT NULL UNIQUE,                -- msg_<ULID>
    received_at  DOUBLE PRECISION NOT NULL,
    tenant       TEXT NOT NULL DEFAULT 'default',
    tenant_seq   BIGINT,                              -- the tenant's own number (tickets)
    mail_from    TEXT NOT NULL,
    rcpt_to      TEXT NOT NULL,                       -- JSON list
    client_ip    TEXT NOT NULL DEFAULT '',
    helo         TEXT NOT NULL DEFAULT '',
    tls          BOOLEAN NOT NULL DEFAULT false,
    trace_id     TEXT NOT NULL DEFAULT '',
    auth         TEXT,
    smtp         TEXT,
    size         BIGINT NOT NULL,
    state        TEXT NOT NULL DEFAULT 'spooled',     -- spooled | processed | quarantined | dead
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    processed_at DOUBLE PRECISION,
    subject      TEXT,
    envelope     TEXT,
    lease_owner  TEXT,                                -- node:pid:nonce of the worker on it
    lease_until  DOUBLE PRECISION,
    processed_by TEXT                                 -- the owner whose run was stored
);
CREATE INDEX messages_spooled ON messages(seq) WHERE state = 'spooled';
CREATE INDEX messages_state_seq ON messages(state, seq);
CREATE INDEX messages_tenant_seq ON messages(tenant, seq);

CREATE TABLE message_raw (
    id   TEXT PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    raw  BYTEA NOT NULL
);

-- Ticket numbers: one row per tenant, bumped under its row lock by every spool, so two nodes
-- never hand out one number twice.
CREATE TABLE ticket_counters (
    tenant  TEXT PRIMARY KEY,
    last    BIGINT NOT NULL
);

CREATE TABLE dedup_keys (
    tenant   TEXT NOT NULL,
    key      TEXT NOT NULL,
    msg_id   TEXT NOT NULL,
    seen_at  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant, key)
);

CREATE TABLE threads (
    id            TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    ticket        TEXT,
    contact       TEXT NOT NULL,
    participants  TEXT NOT NULL,
    subject       TEXT,
    created_at    DOUBLE PRECISION NOT NULL,
    updated_at    DOUBLE PRECISION NOT NULL,
    message_count INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX threads_ticket ON threads(tenant, ticket) WHERE ticket IS NOT NULL;

CREATE TABLE thread_messages (
    tenant      TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    thread_id   TEXT NOT NULL,
    msg_id      TEXT NOT NULL,
    sender      TEXT NOT NULL,
    at          DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant, message_id)
);
CREATE INDEX thread_messages_thread ON thread_messages(thread_id);
CREATE INDEX thread_messages_msg ON thread_messages(msg_id);

CREATE TABLE quarantine (
    msg_id       TEXT PRIMARY KEY,
    tenant       TEXT NOT NULL,
    reason       TEXT NOT NULL,
    detail       TEXT NOT NULL DEFAULT '',
    created_at   DOUBLE PRECISION NOT NULL,
    released_at  DOUBLE PRECISION,
    released_by  TEXT
);
CREATE INDEX quarantine_open ON quarantine(released_at, created_at);

CREATE TABLE audit_log (
    id      BIGSERIAL PRIMARY KEY,
    at      DOUBLE PRECISION NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    detail  TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON audit_log(at);

CREATE TABLE events (
    seq          BIGSERIAL PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    msg_id       TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    tenant       TEXT NOT NULL DEFAULT 'default',
    type         TEXT NOT NULL DEFAULT 'message.received',
    ordering_key TEXT,
    trace_id     TEXT NOT NULL DEFAULT '',
    received_at  DOUBLE PRECISION NOT NULL,
    created_at   DOUBLE PRECISION NOT NULL,
    delivered_at DOUBLE PRECISION,
    acked_at     DOUBLE PRECISION,
    acked_by     TEXT
);
CREATE INDEX events_tenant_pending ON events(tenant, acked_at, seq);
CREATE INDEX events_msg ON events(msg_id);

CREATE TABLE outbox (
    id              BIGSERIAL PRIMARY KEY,
    event_id        TEXT NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    target          TEXT NOT NULL,
    ordering_key    TEXT,
    state           TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    client_errors   INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    locked_until    DOUBLE PRECISION NOT NULL DEFAULT 0,
    lock_owner      TEXT,
    created_at      DOUBLE PRECISION NOT NULL,
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    DOUBLE PRECISION,
    dead_at         DOUBLE PRECISION,
    UNIQUE (event_id, target)
);
CREATE INDEX outbox_due ON outbox(state, target, next_attempt_at);
CREATE INDEX outbox_order ON outbox(target, ordering_key, state, id);
CREATE INDEX outbox_dead ON outbox(state, dead_at);

CREATE TABLE delivery_attempts (
    id          BIGSERIAL PRIMARY KEY,
    outbox_id   BIGINT NOT NULL REFERENCES outbox(id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    at          DOUBLE PRECISION NOT NULL,
    status      INTEGER,
    latency     DOUBLE PRECISION NOT NULL,
    error       TEXT,
    outcome     TEXT NOT NULL,
    node        TEXT                                  -- the lease owner that made it
);
CREATE INDEX delivery_attempts_outbox ON delivery_attempts(outbox_id, id);

CREATE TABLE webhook_targets (
    name            TEXT PRIMARY KEY,
    disabled_at     DOUBLE PRECISION,
    disabled_reason TEXT
);

CREATE TABLE attachments (
    id           TEXT PRIMARY KEY,
    msg_id       TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    sha256       TEXT NOT NULL,
    filename     TEXT,
    content_type TEXT,
    size         BIGINT
);
CREATE INDEX attachments_msg ON attachments(msg_id);
CREATE INDEX attachments_sha ON attachments(sha256);

CREATE TABLE delivery_metrics (
    name   TEXT NOT NULL,
    labels TEXT NOT NULL,
    value  DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (name, labels)
);

CREATE TABLE process_metrics (
    key        TEXT PRIMARY KEY,                      -- node:pid
    updated_at DOUBLE PRECISION NOT NULL,
    exposition TEXT NOT NULL
);

-- Everything every node must agree on that is not config: URL-signing keys, generated API
-- tokens (never the local disk of one node).
CREATE TABLE shared_secrets (
    name       TEXT PRIMARY KEY,
    value      BYTEA NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE labels (
    msg_id      TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    queue       TEXT NOT NULL,
    tags        TEXT NOT NULL DEFAULT '[]',
    labelled_by TEXT NOT NULL DEFAULT '',
    labelled_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX labels_tenant ON labels(tenant, labelled_at);

CREATE TABLE models (
    version      BIGSERIAL PRIMARY KEY,
    tenant       TEXT NOT NULL,
    created_at   DOUBLE PRECISION NOT NULL,
    active       BOOLEAN NOT NULL DEFAULT false,
    activated_at DOUBLE PRECISION,
    summary      TEXT NOT NULL DEFAULT '{}',
    data         TEXT NOT NULL
);
CREATE INDEX models_tenant ON models(tenant, version);
CREATE UNIQUE INDEX models_one_active ON models(tenant) WHERE active;
