-- llmgateway schema, version 9 (SQLite): the rows cooling down, found without reading every row.
--
-- `llmgateway status` counts the (key, model) rows still cooling down (cooldown_until after
-- now). Only rows that were ever rate limited have a cool-down, so a partial index over them
-- answers from a few entries instead of a scan of every status row (200,000 at 100,000 keys
-- with two models, which on PostgreSQL also ran on parallel workers, taking every core).

CREATE INDEX key_model_status_cooling ON key_model_status (cooldown_until)
    WHERE cooldown_until IS NOT NULL;
