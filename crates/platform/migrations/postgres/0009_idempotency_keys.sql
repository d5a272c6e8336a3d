-- Idempotency keys (storage::idempotency).
--
-- Every command with a request_id: the fingerprint of the request that first used the key
-- (its method and body), and the response it got once it completed (NULL until then).
-- A retry with the same body gets that response back and changes nothing; the same key
-- with another body is refused.
CREATE TABLE idempotency_keys (
    tenant_id      TEXT    NOT NULL,
    request_id     TEXT    NOT NULL,
    fingerprint    TEXT    NOT NULL,
    response       BYTEA,
    create_time_us BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, request_id)
);
