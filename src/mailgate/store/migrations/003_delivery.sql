-- Delivery: the durable event log (one row per published event, read by the polling API and
-- pushed by the webhook worker), the webhook outbox (one row per event and target), every
-- delivery attempt, targets an operator (or a 410) disabled, and the attachment index behind
-- the signed attachment URLs.

CREATE TABLE events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,  -- log order; the API cursor
    id           TEXT NOT NULL UNIQUE,               -- evt_<msg ULID>: stable across redeliveries
    msg_id       TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    tenant       TEXT NOT NULL DEFAULT 'default',
    type         TEXT NOT NULL DEFAULT 'message.received',
    ordering_key TEXT,                               -- thread id: per-thread order
    trace_id     TEXT NOT NULL DEFAULT '',
    received_at  REAL NOT NULL,                      -- when the message was accepted (the 250)
    created_at   REAL NOT NULL,                      -- when the event was published
    delivered_at REAL,                               -- first webhook 2xx
    acked_at     REAL,                               -- consumed: webhook 2xx or API ack
    acked_by     TEXT                                -- "webhook:<target>" or "api:<token name>"
);
CREATE INDEX events_tenant_pending ON events(tenant, acked_at, seq);
CREATE INDEX events_msg ON events(msg_id);

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    target          TEXT NOT NULL,                   -- WebhookConfig.name, or its URL
    ordering_key    TEXT,
    state           TEXT NOT NULL DEFAULT 'pending', -- pending | delivered | dead | skipped
    attempts        INTEGER NOT NULL DEFAULT 0,
    client_errors   INTEGER NOT NULL DEFAULT 0,      -- attempts answered by a non-retryable 4xx
    next_attempt_at REAL NOT NULL,
    locked_until    REAL NOT NULL DEFAULT 0,         -- lease of the worker attempting it now
    lock_owner      TEXT,
    created_at      REAL NOT NULL,
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    REAL,
    dead_at         REAL,
    UNIQUE (event_id, target)
);
CREATE INDEX outbox_due ON outbox(state, target, next_attempt_at);
CREATE INDEX outbox_order ON outbox(target, ordering_key, state, id);
CREATE INDEX outbox_dead ON outbox(state, dead_at);

CREATE TABLE delivery_attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    outbox_id   INTEGER NOT NULL REFERENCES outbox(id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    at          REAL NOT NULL,
    status      INTEGER,                             -- HTTP status, NULL for connection errors
    latency     REAL NOT NULL,
    error       TEXT,
    outcome     TEXT NOT NULL                        -- delivered | retry | dead | disabled
);
CREATE INDEX delivery_attempts_outbox ON delivery_attempts(outbox_id, id);

CREATE TABLE webhook_targets (
    name            TEXT PRIMARY KEY,
    disabled_at     REAL,
    disabled_reason TEXT
);

CREATE TABLE attachments (
    id           TEXT PRIMARY KEY,                   -- att_… from the envelope
    msg_id       TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    sha256       TEXT NOT NULL,
    filename     TEXT,
    content_type TEXT,
    size         INTEGER
);
CREATE INDEX attachments_msg ON attachments(msg_id);

-- Delivery counters and histogram buckets, written in the transaction that records each
-- attempt. Delivery runs in a worker process while /metrics is served by the front, so the
-- figures travel through the store (and survive restarts, as Prometheus counters may).
CREATE TABLE delivery_metrics (
    name   TEXT NOT NULL,                            -- e.g. webhook_deliveries, …_bucket
    labels TEXT NOT NULL,                            -- JSON object, sorted keys
    value  REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (name, labels)
);

-- Each worker process's Prometheus exposition, so that the front's /metrics can sum them
-- (see delivery/process_metrics.py).
CREATE TABLE process_metrics (
    key        TEXT PRIMARY KEY,                     -- host:pid
    updated_at REAL NOT NULL,
    exposition TEXT NOT NULL
);
