-- Sprint membership over time, for the burndown: one row per span an item was committed
-- to a sprint, opened by the commitment and closed (leave_time_us) when the item is
-- uncommitted, moved to another sprint or REMOVED, in the same transaction as the change.
CREATE TABLE sprint_memberships (
    tenant_id       TEXT    NOT NULL,
    sprint_id       TEXT    NOT NULL,
    backlog_item_id TEXT    NOT NULL,
    commit_time_us  BIGINT  NOT NULL,
    leave_time_us   BIGINT,
    PRIMARY KEY (tenant_id, sprint_id, commit_time_us, backlog_item_id)
);
CREATE INDEX sprint_memberships_open ON sprint_memberships (backlog_item_id, tenant_id)
    WHERE leave_time_us IS NULL;

-- Items committed before memberships were recorded: members since the epoch, as the
-- burndown counted them before.
INSERT INTO sprint_memberships (tenant_id, sprint_id, backlog_item_id, commit_time_us, leave_time_us)
SELECT tenant_id, sprint_id, id, 0, NULL FROM backlog_items
WHERE sprint_id <> '' AND status <> 5;
