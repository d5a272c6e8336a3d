-- Each sprint orders its own items (the sprint backlog), apart from the product backlog.
-- sprint_rank is set exactly while sprint_id is: an item committed before this migration
-- starts from its product rank, which is unique within the product and so within the
-- sprint. The tenant comes second in the index, as for the product rank (0102).
ALTER TABLE backlog_items ADD COLUMN sprint_rank TEXT;
UPDATE backlog_items SET sprint_rank = rank WHERE sprint_id <> '';
CREATE UNIQUE INDEX backlog_items_sprint_rank ON backlog_items (sprint_id, tenant_id, sprint_rank);
