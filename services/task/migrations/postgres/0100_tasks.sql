-- Tasks. Removed tasks are kept (removed_time_us set) so the burndown keeps their history.
CREATE TABLE tasks (
    id              TEXT    PRIMARY KEY,
    tenant_id       TEXT    NOT NULL,
    backlog_item_id TEXT    NOT NULL,
    request_id      TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    description     TEXT    NOT NULL,
    volunteer_id    TEXT    NOT NULL,
    status          BIGINT NOT NULL,
    hours_remaining BIGINT NOT NULL,
    latest_log_day  TEXT,
    version         BIGINT NOT NULL,
    create_time_us  BIGINT NOT NULL,
    update_time_us  BIGINT NOT NULL,
    removed_time_us BIGINT
);
CREATE UNIQUE INDEX tasks_request_id ON tasks (tenant_id, request_id);
CREATE INDEX tasks_by_backlog_item ON tasks (backlog_item_id, create_time_us, id);

-- One estimate per task per day; a second estimate the same day replaces the first.
CREATE TABLE estimation_log (
    task_id         TEXT    NOT NULL,
    day             TEXT    NOT NULL,
    backlog_item_id TEXT    NOT NULL,
    hours_remaining BIGINT NOT NULL,
    record_time_us  BIGINT NOT NULL,
    PRIMARY KEY (task_id, day)
);
CREATE INDEX estimation_log_by_item ON estimation_log (backlog_item_id, day);

-- Running totals per backlog item, updated in the same transaction as every change to
-- them, so the coordinator's basis is one primary-key read.
CREATE TABLE item_totals (
    backlog_item_id TEXT    PRIMARY KEY,
    tenant_id       TEXT    NOT NULL,
    hours_remaining BIGINT NOT NULL,
    task_count      BIGINT NOT NULL,
    revision        BIGINT NOT NULL
);
