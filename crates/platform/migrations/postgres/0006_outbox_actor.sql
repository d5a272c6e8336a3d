-- Who acted: the subject of the caller's token (a person, or `service:<name>` for what a
-- service did on its own, such as the coordinator's reconciliation). Empty for events
-- written before it was recorded.
ALTER TABLE outbox ADD COLUMN actor TEXT NOT NULL DEFAULT '';
