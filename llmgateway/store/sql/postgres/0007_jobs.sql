-- llmgateway schema, version 7 (PostgreSQL): background jobs of the key admin (rechecks).
--
-- One row per job: what it does (kind), where it stands (state: running, done, failed), how
-- far (done of total) and what it found so far (results: a JSON object of outcome -> count).
-- Any worker may read a job another one runs.

CREATE TABLE jobs (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind       TEXT        NOT NULL,
    state      TEXT        NOT NULL DEFAULT 'running',
    done       INTEGER     NOT NULL DEFAULT 0,
    total      INTEGER     NOT NULL DEFAULT 0,
    results    JSONB       NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
