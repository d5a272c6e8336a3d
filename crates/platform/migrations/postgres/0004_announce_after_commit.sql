-- Commits are no longer announced from inside the writing transaction: a transaction
-- that notifies holds a cluster-wide lock through its commit's WAL flush, which queued
-- every notifying commit of every database behind the one before. Each process now
-- announces its commits after they are made (platform/src/feed/notify.rs).
DROP TRIGGER outbox_notify ON outbox;
DROP FUNCTION agilepm_outbox_notify();
