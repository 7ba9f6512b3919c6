-- llmgateway schema, version 4 (SQLite): key inserts and deletes reach the other workers.
--
-- A key sync (and any other edit of an instance's keys) stamps the key_model_status rows it
-- inserts with the change_counter value of its write, as record() does for statuses, and
-- leaves one row here per key it deletes: a worker that sees PRAGMA data_version move reads
-- the rows whose version grew and the keys removed since, and updates its pool at once.
-- api_keys ids are never reused (AUTOINCREMENT), so key_id alone names a removed key.
-- Rows older than a day are pruned by later key syncs: every worker read them long before
-- (a worker whose feed failed reloads everything once it recovers).

CREATE TABLE removed_keys (
    key_id     INTEGER PRIMARY KEY,
    instance   TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    removed_at REAL    NOT NULL
);

CREATE INDEX removed_keys_version ON removed_keys (version);
