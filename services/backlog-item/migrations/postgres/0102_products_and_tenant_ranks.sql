-- What the planning service told this service about its products (SyncProducts): that
-- they exist, and how each moves finished items. Items may only be planned for a product
-- recorded here, and reconciliation applies the mode recorded here, never a caller's.
CREATE TABLE products (
    tenant_id              TEXT    NOT NULL,
    product_id             TEXT    NOT NULL,
    status_transition_mode INTEGER NOT NULL,
    product_version        BIGINT  NOT NULL,
    PRIMARY KEY (tenant_id, product_id)
);

-- Rank keys are scoped by tenant as well as product, so that no tenant's items can
-- collide with, or be placed among, another tenant's. The tenant comes second: an index
-- led by tenant_id tempts PostgreSQL's planner, before it has statistics, away from the
-- primary key for statements that name an item by id and tenant.
DROP INDEX backlog_items_rank;
CREATE UNIQUE INDEX backlog_items_rank ON backlog_items (product_id, tenant_id, rank);
