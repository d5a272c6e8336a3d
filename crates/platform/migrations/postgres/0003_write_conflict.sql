-- Raised by a guarded write (platform/src/guarded_writes.rs) when one of its parts
-- touched fewer rows than it must: a row it read has changed since. Raising aborts the
-- whole statement, so none of its parts stays; serialization_failure tells the caller
-- (and its error mapping) that the write lost a race and may be retried.
CREATE FUNCTION agilepm_write_conflict() RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a guarded write found rows changed since they were read'
        USING ERRCODE = 'serialization_failure';
END;
$$;
