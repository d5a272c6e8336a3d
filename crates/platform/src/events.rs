//! Domain events between services: serving the outbox as a gap-free, resumable gRPC
//! feed, following a peer's feed from a durable checkpoint, and (past one machine)
//! relaying the outbox to NATS JetStream and consuming it there.

pub mod failure_run;
pub mod feed;
pub mod follower;
pub mod jetstream;
