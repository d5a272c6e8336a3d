//! The event feed: each service serves its outbox as a resumable, gap-free stream
//! (`agilepm.events.v1.EventFeedService`), and Rust consumers follow a feed with
//! [`follower`](crate::follower).
//!
//! * [`position`]: the opaque, totally ordered position tokens.
//! * [`reader`]: the gap-safe read of the outbox table on both engines.
//! * [`service`]: the gRPC service: replay, then tail, with heartbeats.
//! * [`notify`]: how subscribers are woken when events commit.

pub mod notify;
pub mod position;
pub mod reader;
pub mod service;

pub use notify::CommitNotifier;
pub use position::Position;
pub use reader::{OutboxReader, Read, StoredEvent};
pub use service::{EventFeed, FeedOptions};
