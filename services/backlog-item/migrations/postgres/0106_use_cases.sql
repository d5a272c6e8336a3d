-- What the planning service told this service about its use cases (SyncUseCases): that
-- they exist, and the product each belongs to. An item's use_case_id must name one of
-- its tenant and product, as its product_id must name a recorded product.
CREATE TABLE use_cases (
    tenant_id        TEXT   NOT NULL,
    use_case_id      TEXT   NOT NULL,
    product_id       TEXT   NOT NULL,
    use_case_version BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, use_case_id)
);
