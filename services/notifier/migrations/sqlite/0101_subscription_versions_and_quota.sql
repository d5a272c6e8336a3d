-- Subscriptions are written like every other aggregate: guarded by their version, so a
-- caller's stale Update, Rotate or Delete is refused with ABORTED.
ALTER TABLE subscriptions ADD COLUMN version BIGINT NOT NULL DEFAULT 1;

-- How many subscriptions each tenant holds, moved in the transaction that creates or
-- deletes one. A create increments it only while it is below the bound, in one
-- statement, so concurrent creates cannot both see room for the last place (counting
-- the subscriptions first and inserting after let 26 parallel creates leave 26).
CREATE TABLE subscription_counts (
    tenant_id     TEXT   PRIMARY KEY,
    subscriptions BIGINT NOT NULL
);
INSERT INTO subscription_counts (tenant_id, subscriptions)
    SELECT tenant_id, COUNT(*) FROM subscriptions GROUP BY tenant_id;
