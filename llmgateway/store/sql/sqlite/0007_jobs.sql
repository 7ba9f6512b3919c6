-- llmgateway schema, version 7 (SQLite): background jobs of the key admin (rechecks).
--
-- One row per job: what it does (kind), where it stands (state: running, done, failed), how
-- far (done of total) and what it found so far (results: a JSON object of outcome -> count).
-- Any worker may read a job another one runs. Times are REAL epoch seconds, UTC.

CREATE TABLE jobs (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT    NOT NULL,
    state      TEXT    NOT NULL DEFAULT 'running',
    done       INTEGER NOT NULL DEFAULT 0,
    total      INTEGER NOT NULL DEFAULT 0,
    results    TEXT    NOT NULL DEFAULT '{}',
    created_at REAL    NOT NULL,
    updated_at REAL    NOT NULL
);
