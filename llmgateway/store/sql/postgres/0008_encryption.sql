-- llmgateway schema, version 8 (PostgreSQL): whether the stored keys are encrypted at rest, and with which key.
--
-- store_meta holds named facts about the store, one row each:
--   key_encryption  `none` (key_value holds the keys in clear), or `aes-gcm:<check value>`: the
--                   keys are sealed with AES-GCM under a key derived from database.encryption_key,
--                   and the check value (an HMAC of a constant under another derived key, never
--                   the key itself) tells at start-up whether the configured key is that key.
--   key_migration   present only while `llmgateway keys encrypt|decrypt|rotate-encryption-key`
--                   is rewriting the keys: the command, the codecs it goes from and to, and the
--                   last key id rewritten (the command resumes after it).

CREATE TABLE store_meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

INSERT INTO store_meta (name, value) VALUES ('key_encryption', 'none');
