-- The transactional outbox: every state change writes its event here in the same
-- transaction. SQLite has one writer at a time, so AUTOINCREMENT positions are assigned
-- and committed in the same order: a reader never sees position N+1 before N.
CREATE TABLE outbox (
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id       TEXT    NOT NULL UNIQUE,
    event_type     TEXT    NOT NULL,
    aggregate_type TEXT    NOT NULL,
    aggregate_id   TEXT    NOT NULL,
    tenant_id      TEXT    NOT NULL,
    occur_time_us  INTEGER NOT NULL,
    payload        BLOB    NOT NULL
);

-- A random id per database, embedded in every feed position so that a position issued
-- by another feed (another service or another database) is recognised and refused.
CREATE TABLE feed_identity (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    feed_id   TEXT    NOT NULL
);
INSERT INTO feed_identity (singleton, feed_id) VALUES (1, lower(hex(randomblob(6))));

-- Durable positions of the feeds this service consumes.
CREATE TABLE feed_checkpoints (
    consumer      TEXT    PRIMARY KEY,
    position      TEXT    NOT NULL,
    update_time_us INTEGER NOT NULL
);
