-- The whole task-hours basis last applied to each item, not only its revision: a commit,
-- a re-commit or a mode switch settles the item against its hours in its own
-- transaction, so an item whose tasks were finished before it was committed becomes DONE
-- without waiting for a task event that may never come.
ALTER TABLE backlog_items ADD COLUMN task_hours INTEGER NOT NULL DEFAULT 0;
ALTER TABLE backlog_items ADD COLUMN task_count INTEGER NOT NULL DEFAULT 0;
-- An item awaiting acceptance was flagged by a basis with tasks and no hours left.
UPDATE backlog_items SET task_count = 1 WHERE awaiting_acceptance = 1;
