-- Endpoints tenants subscribed. The secrets sign deliveries (HMAC), so they are kept as
-- given to the tenant; they are never returned after creation or rotation.
CREATE TABLE subscriptions (
    subscription_id           TEXT   PRIMARY KEY,
    tenant_id                 TEXT   NOT NULL,
    target_url                TEXT   NOT NULL,
    -- Notification type numbers, comma-separated (e.g. '1,5').
    notification_types        TEXT   NOT NULL,
    description               TEXT   NOT NULL,
    enabled                   BIGINT NOT NULL,
    secret                    TEXT   NOT NULL,
    previous_secret           TEXT,
    previous_secret_expire_us BIGINT,
    create_time_us            BIGINT NOT NULL,
    update_time_us            BIGINT NOT NULL
);
CREATE INDEX subscriptions_by_tenant ON subscriptions (tenant_id, create_time_us);

-- The transactional inbox and the delivery queue in one: a row per notification per
-- subscription, written in the transaction that advances the feed checkpoint. The
-- unique key makes a replayed event a no-op. `seq` orders a subscription's deliveries
-- in the order they were recorded (feed order within one feed: a feed's batches are
-- recorded one transaction after another).
CREATE TABLE deliveries (
    seq               BIGSERIAL PRIMARY KEY,
    delivery_id       TEXT   NOT NULL UNIQUE,
    subscription_id   TEXT   NOT NULL,
    tenant_id         TEXT   NOT NULL,
    webhook_id        TEXT   NOT NULL,
    notification_type BIGINT NOT NULL,
    payload           TEXT   NOT NULL,
    trace_parent      TEXT   NOT NULL,
    -- 1 pending, 2 delivered, 3 dead (the DeliveryState numbers).
    state             BIGINT NOT NULL,
    attempts          BIGINT NOT NULL,
    next_attempt_us   BIGINT NOT NULL,
    last_error        TEXT   NOT NULL,
    last_http_status  BIGINT NOT NULL,
    occur_time_us     BIGINT NOT NULL,
    create_time_us    BIGINT NOT NULL,
    deliver_time_us   BIGINT,
    update_time_us    BIGINT NOT NULL,
    UNIQUE (subscription_id, webhook_id)
);
CREATE INDEX deliveries_queue ON deliveries (state, subscription_id, seq);
CREATE INDEX deliveries_listed ON deliveries (tenant_id, create_time_us);

-- Sprints the notifier watches for falling behind: started and not yet completed.
CREATE TABLE active_sprints (
    sprint_id      TEXT   PRIMARY KEY,
    tenant_id      TEXT   NOT NULL,
    product_id     TEXT   NOT NULL,
    -- Whether the last verdict was "at risk", and for which day it was last sent.
    at_risk        BIGINT NOT NULL,
    at_risk_day    TEXT   NOT NULL,
    update_time_us BIGINT NOT NULL
);

-- The latest day a tenant's team has estimated for (an estimate may be dated a day
-- ahead of UTC, where the team's day has begun): the day sprint health is judged on.
CREATE TABLE tenant_days (
    tenant_id  TEXT PRIMARY KEY,
    latest_day TEXT NOT NULL
);
