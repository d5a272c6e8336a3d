-- Announce commits that appended events without a round trip of the writer's own: a
-- statement-level trigger queues the notification inside the writing transaction.
-- PostgreSQL delivers it only if and when that transaction commits, and folds identical
-- notifications of one transaction into one.
CREATE FUNCTION agilepm_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('agilepm_outbox', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION agilepm_outbox_notify();
