-- The tenant's team: who can volunteer for tasks and own products. A member's id is the
-- subject of their tokens; roles is a bit mask (bit 1 team member, bit 2 product owner).
CREATE TABLE members (
    tenant_id      TEXT   NOT NULL,
    id             TEXT   NOT NULL,
    display_name   TEXT   NOT NULL,
    email          TEXT   NOT NULL,
    roles          BIGINT NOT NULL,
    enabled        BIGINT NOT NULL,
    version        BIGINT NOT NULL,
    create_time_us BIGINT NOT NULL,
    update_time_us BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
