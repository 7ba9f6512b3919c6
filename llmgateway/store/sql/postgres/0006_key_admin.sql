-- llmgateway schema, version 6 (PostgreSQL): keys managed at runtime.
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
--   from_api     true when the key was added through the key admin; a key sync never deletes
--                such a key (it only clears source_file when the key leaves its file).
-- A key disabled by hand has the status `disabled` on every (key, model) row: no new column.
--
-- key_usage: requests, failures and the last use of each key, incremented by the write queue.
-- key_history: the status changes of each key (old -> new, reason, masked message, when); the
-- write queue prunes each key's history to its newest rows.

ALTER TABLE api_keys
    ADD COLUMN fingerprint TEXT,
    ADD COLUMN key_mask    TEXT    NOT NULL DEFAULT '',
    ADD COLUMN source_file TEXT,
    ADD COLUMN from_api    BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN model_statuses TEXT NOT NULL DEFAULT '';

UPDATE api_keys SET source_file = '';
UPDATE api_keys SET model_statuses = a.v FROM (
    SELECT o.key_id, chr(30) || string_agg(o.model || chr(31) || o.status, chr(30) ORDER BY o.model) || chr(30) AS v
    FROM key_model_status AS o GROUP BY o.key_id
) AS a WHERE api_keys.id = a.key_id;

-- NULLs are distinct in a unique index: the rows not yet fingerprinted never collide.
CREATE UNIQUE INDEX api_keys_fingerprint ON api_keys (instance, fingerprint);
-- Listing one instance's keys in id order.
CREATE INDEX api_keys_instance ON api_keys (instance, id);
-- Finding a key by its mask or fingerprint (the `q` of a listing).
CREATE INDEX api_keys_mask ON api_keys (key_mask);
CREATE INDEX api_keys_fingerprint_alone ON api_keys (fingerprint);
-- model_statuses changes with every status written, so it is in no index: its updates stay
-- heap-only (HOT: no index to touch), with room left in each page for the new row versions.
ALTER TABLE api_keys SET (fillfactor = 80);
-- Keys of one status, whatever their model (list and bulk actions filtered by status).
CREATE INDEX key_model_status_status ON key_model_status (status, key_id);

CREATE TABLE key_usage (
    key_id       BIGINT PRIMARY KEY REFERENCES api_keys (id) ON DELETE CASCADE,
    requests     BIGINT NOT NULL DEFAULT 0,
    failures     BIGINT NOT NULL DEFAULT 0,
    last_used_at TIMESTAMPTZ
);

CREATE TABLE key_history (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key_id     BIGINT      NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    model      TEXT        NOT NULL,
    old_status TEXT        NOT NULL,
    new_status TEXT        NOT NULL,
    reason     TEXT,
    message    TEXT        NOT NULL DEFAULT '',
    at         TIMESTAMPTZ NOT NULL
);

CREATE INDEX key_history_key ON key_history (key_id, at, id);

-- step: key_fingerprints
