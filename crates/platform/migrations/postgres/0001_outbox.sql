-- The transactional outbox: every state change writes its event here in the same
-- transaction.
--
-- Sequence values are assigned at insert time but become visible at commit time, so a
-- reader ordering by `seq` alone could see seq 11 before a slower transaction commits
-- seq 10, advance past it, and lose it. Each row therefore records the id of the
-- transaction that wrote it, and the feed reads in (txid, seq) order only below the
-- reading snapshot's xmin (see platform/src/feed/reader.rs for the argument).
CREATE TABLE outbox (
    txid           BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    seq            BIGINT GENERATED ALWAYS AS IDENTITY,
    event_id       TEXT   NOT NULL UNIQUE,
    event_type     TEXT   NOT NULL,
    aggregate_type TEXT   NOT NULL,
    aggregate_id   TEXT   NOT NULL,
    tenant_id      TEXT   NOT NULL,
    occur_time_us  BIGINT NOT NULL,
    payload        BYTEA  NOT NULL,
    PRIMARY KEY (txid, seq)
);

-- A random id per database, embedded in every feed position so that a position issued
-- by another feed (another service or another database) is recognised and refused.
CREATE TABLE feed_identity (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    feed_id   TEXT    NOT NULL
);
INSERT INTO feed_identity (singleton, feed_id) VALUES (1, substr(md5(random()::text), 1, 12));

-- Durable positions of the feeds this service consumes.
CREATE TABLE feed_checkpoints (
    consumer       TEXT   PRIMARY KEY,
    position       TEXT   NOT NULL,
    update_time_us BIGINT NOT NULL
);
