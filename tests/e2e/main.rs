//! End-to-end tests. Every test starts real servers on ephemeral loopback ports, each on
//! its own fresh database, and talks to them over real gRPC. Tests taking an `Engine`
//! run twice, on SQLite and on PostgreSQL (see `agilepm_testkit::engine_tests!`).

#![allow(clippy::unwrap_used)]

mod backlog;
mod balancing;
mod batching;
mod clocks;
mod coordinator;
mod crash;
mod database_restart;
mod feed;
mod foundation;
mod given;
mod grpc_web;
mod jetstream;
mod limits;
mod malformed;
mod nats_secured;
mod notifier;
mod partition;
mod planning;
mod private_postgres;
mod processes;
mod references;
mod retention;
mod schema;
mod security;
mod status_follows_hours;
mod task;
mod tls;
mod traces;
