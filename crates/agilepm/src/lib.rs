//! Running several agilepm services in one process: `agilepm dev`, the benchmark and the
//! test kit all start services through [`system`], so each service keeps its own port and
//! database and they still talk to each other over real gRPC on loopback.

pub mod bench;
pub mod board;
pub mod burndown_chart;
pub mod nats_authorization;
pub mod postgres;
pub mod system;
pub mod webhook_receiver;
