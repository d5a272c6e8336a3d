//! Helpers for the services' domain code, free of I/O: errors and their gRPC codes,
//! request checks, page tokens, consistency tokens, rank keys, time, the services' names
//! and who is acting.

pub mod actor;
pub mod consistency;
pub mod error;
pub mod paging;
pub mod rank;
pub mod service_name;
pub mod team_zone;
pub mod time;
pub mod validate;
