-- llmgateway schema, version 6 (SQLite): keys managed at runtime.
--
-- api_keys gains what the key admin needs:
--   fingerprint  64 hex characters from the store's key codec (SHA-256 of the key, or a keyed
--                HMAC when keys are encrypted at rest); one key per (instance, fingerprint), so
--                a key present in a key file and added by hand is one row. NULL only until the
--                data step of this migration has filled it for the rows stored before.
--   key_mask     the key as shown (`sk-a...9f3k`, `***`), searchable without reading key_value.
--   source_file  the key file that holds the key, as configured (`keys/openai-main/a.txt`), or
--                `inline` for the instance's inline keys; NULL when no file holds it. Rows stored
--                before this version came from key files: '' until the next key sync names it.
--   model_statuses  each model of the key with its status, as one text (see
--                llmgateway/store/model_statuses.py), kept by every write of a status: listings
--                filter and count keys by model and status from this column alone.
--   from_api     1 when the key was added through the key admin; a key sync never deletes such
--                a key (it only clears source_file when the key leaves its file).
-- A key disabled by hand has the status `disabled` on every (key, model) row: no new column.
--
-- key_usage: requests, failures and the last use of each key, incremented by the write queue.
-- key_history: the status changes of each key (old -> new, reason, masked message, when); the
-- write queue prunes each key's history to its newest rows.

ALTER TABLE api_keys ADD COLUMN fingerprint TEXT;
ALTER TABLE api_keys ADD COLUMN key_mask TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN source_file TEXT;
ALTER TABLE api_keys ADD COLUMN from_api INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN model_statuses TEXT NOT NULL DEFAULT '';

UPDATE api_keys SET source_file = '';
UPDATE api_keys SET model_statuses = a.v FROM (
    SELECT o.key_id, char(30) || group_concat(o.model || char(31) || o.status, char(30)) || char(30) AS v
    FROM (SELECT x.key_id, x.model, x.status FROM key_model_status AS x ORDER BY x.key_id, x.model) AS o
    GROUP BY o.key_id
) AS a WHERE api_keys.id = a.key_id;

-- NULLs are distinct in a unique index: the rows not yet fingerprinted never collide.
CREATE UNIQUE INDEX api_keys_fingerprint ON api_keys (instance, fingerprint);
-- Listing one instance's keys in id order (the rowid rides along in every SQLite index).
CREATE INDEX api_keys_instance ON api_keys (instance);
-- Finding a key by its mask or fingerprint (the `q` of a listing).
CREATE INDEX api_keys_mask ON api_keys (key_mask);
CREATE INDEX api_keys_fingerprint_alone ON api_keys (fingerprint);
-- Counting keys per instance and model statuses (listing facets) from the index alone.
CREATE INDEX api_keys_model_statuses ON api_keys (instance, model_statuses);
-- Keys of one status, whatever their model (list and bulk actions filtered by status).
CREATE INDEX key_model_status_status ON key_model_status (status, key_id);

CREATE TABLE key_usage (
    key_id       INTEGER PRIMARY KEY REFERENCES api_keys (id) ON DELETE CASCADE,
    requests     INTEGER NOT NULL DEFAULT 0,
    failures     INTEGER NOT NULL DEFAULT 0,
    last_used_at REAL
);

CREATE TABLE key_history (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    key_id     INTEGER NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    model      TEXT    NOT NULL,
    old_status TEXT    NOT NULL,
    new_status TEXT    NOT NULL,
    reason     TEXT,
    message    TEXT    NOT NULL DEFAULT '',
    at         REAL    NOT NULL
);

CREATE INDEX key_history_key ON key_history (key_id, at, id);

-- step: key_fingerprints
