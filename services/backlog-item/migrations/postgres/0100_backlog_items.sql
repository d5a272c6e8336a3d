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
    type                     BIGINT NOT NULL,
    story_points             BIGINT NOT NULL,
    benefit                  BIGINT NOT NULL,
    penalty                  BIGINT NOT NULL,
    cost                     BIGINT NOT NULL,
    risk                     BIGINT NOT NULL,
    priority_score           DOUBLE PRECISION NOT NULL,
    use_case_id              TEXT    NOT NULL,
    release_id               TEXT    NOT NULL,
    sprint_id                TEXT    NOT NULL,
    status                   BIGINT NOT NULL,
    rank                     TEXT COLLATE "C" NOT NULL,
    derived_from_ids         TEXT    NOT NULL,
    awaiting_acceptance      BIGINT NOT NULL,
    reconciled_task_revision BIGINT NOT NULL,
    version                  BIGINT NOT NULL,
    create_time_us           BIGINT NOT NULL,
    update_time_us           BIGINT NOT NULL
);
CREATE UNIQUE INDEX backlog_items_request_id ON backlog_items (tenant_id, request_id);
CREATE UNIQUE INDEX backlog_items_rank ON backlog_items (product_id, rank);
CREATE INDEX backlog_items_priority ON backlog_items (product_id, priority_score, rank);
