//! The load-and-abuse suite: the task service in a real process of its own, on its own
//! database (SQLite and PostgreSQL), measured from outside (`/proc`, health, the clock)
//! while clients do what the second wave's issue 21 found starving it. Each test
//! reproduces one finding at a size that fits CI and asserts the bound now enforced;
//! `deploy/README.md` lists the bounds and the settings that control them.
//!
//! The tests take turns ([`SERIAL`]): they measure rates, memory and CPU time, which a
//! neighbouring test's load would disturb.

#![allow(clippy::unwrap_used)]

mod connections;
mod database;
mod error_report;
mod metrics;
mod process;
mod proxy;
mod shutdown;
mod subscribers;

/// Held by each test for its whole run.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
