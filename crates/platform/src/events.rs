//! Domain events between services over gRPC: serving the outbox as a gap-free,
//! resumable feed, and following a peer's feed from a durable checkpoint.

pub mod feed;
pub mod follower;
