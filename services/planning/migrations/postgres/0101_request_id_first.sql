-- The request-id indexes lead with request_id, not tenant_id. A connection plans each
-- statement once and keeps the plan (platform/src/db.rs); planned before the table had
-- statistics, a lookup "WHERE id = $1 AND tenant_id = $2" entered through the
-- (tenant_id, request_id) index and read every row of the tenant, for as long as the
-- connection lived. With request_id first, that index cannot serve tenant_id alone and
-- the lookup takes the primary key; the idempotency lookup (tenant_id and request_id
-- both given) uses it as before, and uniqueness is the same pair.
DROP INDEX products_request_id;
CREATE UNIQUE INDEX products_request_id ON products (request_id, tenant_id);
DROP INDEX use_cases_request_id;
CREATE UNIQUE INDEX use_cases_request_id ON use_cases (request_id, tenant_id);
DROP INDEX releases_request_id;
CREATE UNIQUE INDEX releases_request_id ON releases (request_id, tenant_id);
DROP INDEX sprints_request_id;
CREATE UNIQUE INDEX sprints_request_id ON sprints (request_id, tenant_id);
