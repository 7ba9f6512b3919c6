-- llmgateway schema, version 2 (PostgreSQL): several processes and hosts on one database.
--
-- lease_owner / lease_until: a keeper leases the due checks it is about to probe
-- (`UPDATE ... FOR UPDATE SKIP LOCKED`); recording a result clears the lease, and a
-- lease whose holder died expires at lease_until and is taken over.
-- version: bumped on every recorded status (a per-row change counter).

ALTER TABLE key_model_status
    ADD COLUMN lease_owner TEXT,
    ADD COLUMN lease_until TIMESTAMPTZ,
    ADD COLUMN version     BIGINT NOT NULL DEFAULT 0;
