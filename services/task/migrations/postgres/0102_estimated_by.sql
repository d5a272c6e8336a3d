-- Who gave each estimate (the acting subject of the call); empty for estimates recorded
-- before it was.
ALTER TABLE estimation_log ADD COLUMN estimated_by TEXT NOT NULL DEFAULT '';
