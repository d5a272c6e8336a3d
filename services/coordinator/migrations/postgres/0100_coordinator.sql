-- Events that failed permanently. They block progress until an operator skips them
-- (skipped = 1); a later successful retry deletes the row.
CREATE TABLE poison_events (
    event_id        TEXT    PRIMARY KEY,
    position        TEXT    NOT NULL,
    backlog_item_id TEXT    NOT NULL,
    tenant_id       TEXT    NOT NULL,
    error           TEXT    NOT NULL,
    record_time_us  BIGINT NOT NULL,
    skipped         BIGINT NOT NULL
);

-- Which replica may follow the task feed (see src/lease.rs).
CREATE TABLE leases (
    name       TEXT    PRIMARY KEY,
    holder     TEXT    NOT NULL,
    expires_us BIGINT NOT NULL
);
