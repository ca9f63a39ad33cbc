-- The routing classifier (issue 17): the team's labels and the trained model versions.
--
-- A label is a person's (or an agent's) statement of where one stored message belongs; the
-- latest label of a message wins. A model version is data, never code: its coefficients,
-- vocabulary and idf as JSON text (`mailgate.classifier.model`), so loading one cannot run
-- anything. One version per tenant is active; workers compare the active version id per batch
-- and load a newly activated one without a restart.

CREATE TABLE labels (
    msg_id      TEXT PRIMARY KEY,      -- one label per message: a correction replaces it
    tenant      TEXT NOT NULL,
    queue       TEXT NOT NULL,
    tags        TEXT NOT NULL DEFAULT '[]',   -- JSON array
    labelled_by TEXT NOT NULL DEFAULT '',
    labelled_at REAL NOT NULL
);
CREATE INDEX labels_tenant ON labels(tenant, labelled_at);

CREATE TABLE models (
    version     INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant      TEXT NOT NULL,
    created_at  REAL NOT NULL,
    active      INTEGER NOT NULL DEFAULT 0,
    activated_at REAL,
    summary     TEXT NOT NULL DEFAULT '{}',   -- JSON: examples, queues, held-out figures
    data        TEXT NOT NULL                 -- JSON: the model itself (see classifier.model)
);
CREATE INDEX models_tenant ON models(tenant, version);
CREATE UNIQUE INDEX models_one_active ON models(tenant) WHERE active = 1;
