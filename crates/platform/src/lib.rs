//! Plumbing every agilepm service shares, so that a service crate holds only its domain.
//! Five layers, each a folder; a layer uses only the layers below it
//! (runtime -> events -> wire -> storage -> domain), which `.ci/import-cycles.py` checks.
//!
//! | layer | module | holds |
//! |---|---|---|
//! | [`runtime`] | [`service`](runtime::service) | the life of a service process: database, auth, feed, serve |
//! | | [`server`](runtime::server) | gRPC server with health, reflection, tracing, graceful shutdown |
//! | [`events`] | [`feed`](events::feed) | serving the outbox as a gap-free, resumable event feed |
//! | | [`follower`](events::follower) | following a peer's feed from a durable checkpoint |
//! | [`wire`] | [`config`](wire::config) | flags/environment shared by every service |
//! | | [`auth`](wire::auth) | bearer tokens, tenants, roles, the server layer |
//! | | [`tls`](wire::tls) | rustls for servers (reloading certificates, mTLS) and clients |
//! | | [`client`](wire::client) | channels to peer services with credentials, trace context, deadlines |
//! | | [`limits`](wire::limits) | what one client can hold of a server: connections, streams, calls, message sizes |
//! | | [`admission`](wire::admission) | calls refused at once while the database is away or the server is full; the default deadline |
//! | | [`malformed`](wire::malformed) | undecodable request bodies answered INVALID_ARGUMENT |
//! | | [`telemetry`](wire::telemetry) | logs, traces, W3C propagation, OTLP export |
//! | | [`metrics`](wire::metrics) | the meter provider, the Prometheus scrape endpoint, OTLP metrics |
//! | | [`rpc_metrics`](wire::rpc_metrics) | requests, errors by code and durations of every call served and made |
//! | [`storage`] | [`db`](storage::db) | the service's own database (SQLite or PostgreSQL) and its migrations |
//! | | [`statement`](storage::statement) | SQL assembled in parts; lists bound as arrays, text independent of their length |
//! | | [`stored`](storage::stored) | enum numbers and dates read back from the database, decoded loudly; `numbered_enum!` |
//! | | [`optimistic`](storage::optimistic) | compare-and-set writes with retries of lost races |
//! | | [`guarded_writes`](storage::guarded_writes) | many-row compare-and-set writes with their events, all or nothing, one round trip on PostgreSQL |
//! | | [`group_commit`](storage::group_commit) | one writer applying concurrent requests in shared transactions |
//! | | [`ranked`](storage::ranked) | a table-backed list ordered by rank keys: append, place next to, respace |
//! | | [`outbox`](storage::outbox) | appending events in the caller's transaction |
//! | | [`commit_notifier`](storage::commit_notifier) | waking the feed's reader when a unit of work commits events |
//! | [`domain`] | [`error`](domain::error) | domain errors and their one mapping to gRPC status codes |
//! | | [`validate`](domain::validate) | parsing request fields, naming the field on failure |
//! | | [`paging`](domain::paging) | opaque page tokens |
//! | | [`rank`](domain::rank) | lexicographic rank keys for ordered lists |
//! | | [`time`](domain::time) | stored times and protobuf timestamps |
//! | | [`service_name`](domain::service_name) | the services' names and default ports |
//! | | [`actor`](domain::actor) | who is acting in the request being handled |

pub mod domain;
pub mod events;
pub mod runtime;
pub mod storage;
pub mod wire;

pub use domain::error::{AppError, AppResult};
