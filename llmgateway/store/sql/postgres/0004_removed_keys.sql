-- llmgateway schema, version 4 (PostgreSQL): key inserts and deletes reach the other processes.
--
-- Nothing to store here: on PostgreSQL a key sync (and any other edit of an instance's keys)
-- announces the keys it added and removed with NOTIFY llmgateway_status, in the transaction
-- that makes the change. SQLite, which has no notifications, notes removed keys in a table
-- under this version; the version exists on both engines so their numbering stays the same.

SELECT 1;
