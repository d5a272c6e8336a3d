//! What every service's gRPC edge shares: configuration, trust (tokens, roles, TLS),
//! calling peers, limits and admission, and telemetry.

pub mod admission;
pub mod auth;
pub mod browser;
pub mod client;
pub mod config;
pub mod deadline;
pub mod error_report;
pub mod idle;
pub mod limits;
pub mod malformed;
pub mod metrics;
pub mod peer_target;
pub mod rpc_metrics;
pub mod telemetry;
pub mod tls;
