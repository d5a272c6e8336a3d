-- Backlog items. The product backlog's order is `rank` (see src/rank.rs): moving an item
-- rewrites its own row only.
CREATE TABLE backlog_items (
    id                       TEXT    PRIMARY KEY,
    tenant_id                TEXT    NOT NULL,
    product_id               TEXT    NOT NULL,
    request_id               TEXT    NOT NULL,
    summary                  TEXT    NOT NULL,
    story                    TEXT    NOT NULL,
    category                 TEXT    NOT NULL,
    type                     INTEGER NOT NULL,
    story_points             INTEGER NOT NULL,
    benefit                  INTEGER NOT NULL,
    penalty                  INTEGER NOT NULL,
    cost                     INTEGER NOT NULL,
    risk                     INTEGER NOT NULL,
    priority_score           REAL    NOT NULL,
    use_case_id              TEXT    NOT NULL,
    release_id               TEXT    NOT NULL,
    sprint_id                TEXT    NOT NULL,
    status                   INTEGER NOT NULL,
    rank                     TEXT    NOT NULL,
    derived_from_ids         TEXT    NOT NULL,
    awaiting_acceptance      INTEGER NOT NULL,
    reconciled_task_revision INTEGER NOT NULL,
    version                  INTEGER NOT NULL,
    create_time_us           INTEGER NOT NULL,
    update_time_us           INTEGER NOT NULL
);
CREATE UNIQUE INDEX backlog_items_request_id ON backlog_items (tenant_id, request_id);
CREATE UNIQUE INDEX backlog_items_rank ON backlog_items (product_id, rank);
CREATE INDEX backlog_items_priority ON backlog_items (product_id, priority_score, rank);
