-- llmgateway schema, version 1 (SQLite).
-- Times are REAL seconds since the Unix epoch, UTC (sortable; datetime(x, 'unixepoch') reads them).
-- Foreign keys need `PRAGMA foreign_keys = ON`, which the store sets on every connection.

CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    applied_at REAL    NOT NULL
);

CREATE TABLE providers (
    name          TEXT PRIMARY KEY,
    provider_type TEXT NOT NULL
);

CREATE TABLE api_keys (
    id        INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused: queued updates name key ids
    instance  TEXT    NOT NULL REFERENCES providers (name) ON DELETE CASCADE,
    key_value TEXT    NOT NULL,
    added_at  REAL    NOT NULL,
    UNIQUE (instance, key_value)
);

CREATE TABLE key_model_status (
    key_id               INTEGER NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    model                TEXT    NOT NULL,
    status               TEXT    NOT NULL DEFAULT 'untested',
    last_checked_at      REAL,
    next_check_at        REAL,
    failing_since        REAL,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    status_code          INTEGER,
    message              TEXT    NOT NULL DEFAULT '',
    response_ms          INTEGER,
    cooldown_until       REAL,
    PRIMARY KEY (key_id, model)
);

-- "Due for a check": rows whose next_check_at has passed; NULL means checking stopped.
-- Its columns match fetch_due's ORDER BY, so a LIMIT stops the scan early.
CREATE INDEX key_model_status_due
    ON key_model_status (next_check_at, key_id, model)
    WHERE next_check_at IS NOT NULL;

-- "Usable keys of an instance/model": api_keys (instance, ...) comes from the UNIQUE
-- constraint; this one serves per-model status look-ups and the status summary.
CREATE INDEX key_model_status_model_status
    ON key_model_status (model, status, key_id);
