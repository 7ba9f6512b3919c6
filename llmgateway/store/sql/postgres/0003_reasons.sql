-- llmgateway schema, version 3 (PostgreSQL): the reason beside each status.
--
-- reason: the ErrorReason of the last failure of the (key, model). For a failure status it
-- is the status itself; for `verifying` (a fatal reason seen on client traffic, not yet
-- confirmed by the keeper's probe) it is the suspected reason; NULL after a success.

ALTER TABLE key_model_status ADD COLUMN reason TEXT;

UPDATE key_model_status SET reason = status WHERE status NOT IN ('untested', 'valid');
