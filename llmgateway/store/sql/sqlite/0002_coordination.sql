-- llmgateway schema, version 2 (SQLite): several worker processes on one database file.
--
-- lease_owner / lease_until: a keeper leases the due checks it is about to probe (in a
-- BEGIN IMMEDIATE transaction); recording a result clears the lease, and a lease whose
-- holder died expires at lease_until (REAL epoch seconds) and is taken over.
-- version: the value of change_counter when the row's status was last recorded, so a
-- process that sees `PRAGMA data_version` move reads only the rows changed since.

ALTER TABLE key_model_status ADD COLUMN lease_owner TEXT;
ALTER TABLE key_model_status ADD COLUMN lease_until REAL;
ALTER TABLE key_model_status ADD COLUMN version INTEGER NOT NULL DEFAULT 0;

CREATE TABLE change_counter (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT INTO change_counter (id, value) VALUES (1, 0);

CREATE INDEX key_model_status_version ON key_model_status (version);
