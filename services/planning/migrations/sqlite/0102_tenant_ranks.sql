-- Rank keys are scoped by tenant as well as product, so that no tenant's use cases can
-- collide with, or be placed among, another tenant's.
DROP INDEX use_cases_rank;
CREATE UNIQUE INDEX use_cases_rank ON use_cases (product_id, tenant_id, rank);
