//! The event feed: each service serves its outbox as a resumable, gap-free stream
//! (`agilepm.events.v1.EventFeedService`), and Rust consumers follow a feed with
//! [`follower`](crate::events::follower).
//!
//! * [`position`]: the opaque, totally ordered position tokens.
//! * [`reader`]: the gap-safe read of the outbox table on both engines.
//! * [`hub`]: the process's one reader of the outbox tail, delivering to subscribers.
//! * [`mailbox`]: one subscriber's bounded queue of deliveries.
//! * [`filter`]: which events a subscription wants.
//! * [`subscription`]: one subscriber: catch up from the database, then follow the hub.
//! * [`service`]: the gRPC service: admission and bounds of subscriptions.
//! * [`notify`]: how the hub is woken when events commit.
//! * [`retention`]: deleting old events, and refusing subscriptions from before them.
//! * `meters`: the feed's metrics (head, subscribers, delivery lag).

pub mod filter;
pub mod hub;
pub mod mailbox;
mod meters;
pub mod notify;
pub mod position;
pub mod reader;
pub mod retention;
pub mod service;
pub mod subscription;

pub use notify::CommitNotifier;
pub use position::Position;
pub use reader::{OutboxReader, Read, StoredEvent};
pub use service::{EventFeed, FeedOptions};
