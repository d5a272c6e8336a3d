-- Products: one product backlog each (its items live in the backlog-item service).
CREATE TABLE products (
    id                     TEXT    PRIMARY KEY,
    tenant_id              TEXT    NOT NULL,
    request_id             TEXT    NOT NULL,
    name                   TEXT    NOT NULL,
    description            TEXT    NOT NULL,
    product_owner_id       TEXT    NOT NULL,
    status_transition_mode BIGINT NOT NULL,
    version                BIGINT NOT NULL,
    create_time_us         BIGINT NOT NULL,
    update_time_us         BIGINT NOT NULL
);
CREATE UNIQUE INDEX products_request_id ON products (tenant_id, request_id);
CREATE UNIQUE INDEX products_name ON products (tenant_id, name);

-- Use cases: the product owner's scope, ordered by rank within a product.
CREATE TABLE use_cases (
    id              TEXT    PRIMARY KEY,
    tenant_id       TEXT    NOT NULL,
    product_id      TEXT    NOT NULL,
    request_id      TEXT    NOT NULL,
    title           TEXT    NOT NULL,
    value_statement TEXT    NOT NULL,
    rank            TEXT COLLATE "C" NOT NULL,
    state           BIGINT NOT NULL,
    version         BIGINT NOT NULL,
    create_time_us  BIGINT NOT NULL,
    update_time_us  BIGINT NOT NULL
);
CREATE UNIQUE INDEX use_cases_request_id ON use_cases (tenant_id, request_id);
CREATE UNIQUE INDEX use_cases_rank ON use_cases (product_id, rank);

-- Releases.
CREATE TABLE releases (
    id             TEXT    PRIMARY KEY,
    tenant_id      TEXT    NOT NULL,
    product_id     TEXT    NOT NULL,
    request_id     TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    description    TEXT    NOT NULL,
    begin_date     TEXT    NOT NULL,
    end_date       TEXT    NOT NULL,
    version        BIGINT NOT NULL,
    create_time_us BIGINT NOT NULL
);
CREATE UNIQUE INDEX releases_request_id ON releases (tenant_id, request_id);
CREATE INDEX releases_by_product ON releases (product_id, begin_date, id);

-- Sprints. At most one ACTIVE (state 2) sprint per product, enforced by the database.
CREATE TABLE sprints (
    id             TEXT    PRIMARY KEY,
    tenant_id      TEXT    NOT NULL,
    product_id     TEXT    NOT NULL,
    request_id     TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    goal           TEXT    NOT NULL,
    begin_date     TEXT    NOT NULL,
    end_date       TEXT    NOT NULL,
    retrospective  TEXT    NOT NULL,
    state          BIGINT NOT NULL,
    summary        BYTEA,
    complete_time_us BIGINT,
    version        BIGINT NOT NULL,
    create_time_us BIGINT NOT NULL
);
CREATE UNIQUE INDEX sprints_request_id ON sprints (tenant_id, request_id);
CREATE INDEX sprints_by_product ON sprints (product_id, begin_date, id);
CREATE UNIQUE INDEX sprints_one_active ON sprints (product_id) WHERE state = 2;
