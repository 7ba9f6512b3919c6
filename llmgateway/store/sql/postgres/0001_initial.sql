-- llmgateway schema, version 1 (PostgreSQL).
-- Times are TIMESTAMPTZ (UTC).

CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER     PRIMARY KEY,
    name       TEXT        NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE providers (
    name          TEXT PRIMARY KEY,
    provider_type TEXT NOT NULL
);

CREATE TABLE api_keys (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance  TEXT        NOT NULL REFERENCES providers (name) ON DELETE CASCADE,
    key_value TEXT        NOT NULL,
    added_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (instance, key_value)
);

CREATE TABLE key_model_status (
    key_id               BIGINT      NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    model                TEXT        NOT NULL,
    status               TEXT        NOT NULL DEFAULT 'untested',
    last_checked_at      TIMESTAMPTZ,
    next_check_at        TIMESTAMPTZ,
    failing_since        TIMESTAMPTZ,
    consecutive_failures INTEGER     NOT NULL DEFAULT 0,
    status_code          INTEGER,
    message              TEXT        NOT NULL DEFAULT '',
    response_ms          INTEGER,
    cooldown_until       TIMESTAMPTZ,
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
