-- Poison events no longer stop the feed: each parks its backlog item, and the item's later
-- events are recorded behind it (error 'waiting behind ...') until an operator retries or
-- skips the item. They are read and released per item.
CREATE INDEX poison_events_item ON poison_events (tenant_id, backlog_item_id);
