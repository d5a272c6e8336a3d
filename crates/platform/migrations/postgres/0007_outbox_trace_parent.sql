-- The W3C `traceparent` of the request that wrote the event, so that whoever handles the
-- event links its work to that request's trace. Empty for events written before it was
-- recorded, or outside any trace.
ALTER TABLE outbox ADD COLUMN trace_parent TEXT NOT NULL DEFAULT '';
