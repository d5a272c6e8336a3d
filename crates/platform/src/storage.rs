//! A service's own database: connections and migrations, one SQL text for both engines,
//! loud decoding, the write patterns (compare-and-set, guarded batches, group commit,
//! ranked lists) and the transactional outbox the events of a change are written to.

pub mod commit_notifier;
pub mod db;
pub mod group_commit;
pub mod guarded_writes;
pub mod idempotency;
pub mod keyset;
pub mod optimistic;
pub mod outbox;
pub mod ranked;
pub mod statement;
pub mod stored;
pub mod trace_parent;
