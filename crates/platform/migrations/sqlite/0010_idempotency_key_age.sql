-- Idempotency keys are forgotten a day after their first use (storage::idempotency::sweep
-- deletes them by age, a chunk at a time), so the table holds about a day of commands
-- however long a service runs.
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (create_time_us);
