//! Plumbing every agilepm service shares, so that a service crate holds only its domain.
//!
//! | module | holds |
//! |---|---|
//! | [`service_name`] | the four services' names and default ports |
//! | [`config`] | flags/environment shared by every service, default ports |
//! | [`db`] | the service's own database (SQLite or PostgreSQL) and its migrations |
//! | [`error`] | domain errors and their one mapping to gRPC status codes |
//! | [`auth`] | bearer tokens, tenants, the server interceptor |
//! | [`validate`] | parsing request fields, naming the field on failure |
//! | [`paging`] | opaque page tokens |
//! | [`rank`] | lexicographic rank keys for ordered lists (backlogs, use cases) |
//! | [`ranked`] | a table-backed list ordered by rank keys: append, place next to, respace |
//! | [`time`] | stored times and protobuf timestamps |
//! | [`tls`] | rustls for servers (reloading certificates, mTLS) and clients |
//! | [`telemetry`] | logs, traces, W3C propagation, OTLP export |
//! | [`limits`] | what one client can hold of a server: connections, streams, calls, deadlines |
//! | [`admission`] | calls refused at once while the database is away or the server is full; the default deadline |
//! | [`malformed`] | undecodable request bodies answered INVALID_ARGUMENT |
//! | [`server`] | gRPC server with health, reflection, tracing, graceful shutdown |
//! | [`service`] | the life of a service process: database, auth, feed, serve |
//! | [`client`] | channels to peer services with credentials, trace context, deadlines |
//! | [`optimistic`] | compare-and-set writes with retries of lost races |
//! | [`group_commit`] | one writer applying concurrent requests in shared transactions |
//! | [`stored`] | enum numbers and dates read back from the database, decoded loudly |
//! | [`statement`] | SQL statements assembled in parts, placeholders numbered across them |
//! | [`guarded_writes`] | many-row compare-and-set writes, all or nothing, one round trip on PostgreSQL |
//! | [`outbox`] | appending events in the caller's transaction |
//! | [`commit_notifier`] | waking the feed's reader when a unit of work commits events |
//! | [`feed`] | serving the outbox as a gap-free, resumable event feed |
//! | [`follower`] | following a peer's feed from a durable checkpoint |

pub mod admission;
pub mod auth;
pub mod client;
pub mod commit_notifier;
pub mod config;
pub mod db;
pub mod error;
pub mod feed;
pub mod follower;
pub mod group_commit;
pub mod guarded_writes;
pub mod limits;
pub mod malformed;
pub mod optimistic;
pub mod outbox;
pub mod paging;
pub mod rank;
pub mod ranked;
pub mod server;
pub mod service;
pub mod service_name;
pub mod statement;
pub mod stored;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod validate;

pub use error::{AppError, AppResult};
