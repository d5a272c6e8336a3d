-- Outbox retention (events::feed::retention).
--
-- Consumers that registered the position they have durably handled: retention deletes
-- no event one of them still needs (unless the outbox exceeds its hard cap).
CREATE TABLE feed_consumers (
    consumer       TEXT    PRIMARY KEY,
    txid           INTEGER NOT NULL,
    seq            INTEGER NOT NULL,
    update_time_us INTEGER NOT NULL
);

-- Every event through this position has been deleted: a subscription from before it is
-- refused instead of silently missing them.
CREATE TABLE feed_retention (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    txid      INTEGER NOT NULL,
    seq       INTEGER NOT NULL
);
