-- A tenant's own feed head (GetFeedHead and heartbeats for a tenant's subscriber) is one
-- index probe: a tenant must not see the head of the whole feed, which would reveal other
-- tenants' activity.
CREATE INDEX outbox_tenant_head ON outbox (tenant_id, txid, seq);
