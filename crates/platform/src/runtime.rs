//! The service process: the gRPC server and the life of a service, which ties the
//! layers below together.

pub mod server;
pub mod service;

/// What `--version` prints: the crate version and the git revision it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("AGILEPM_GIT_REVISION"),
    ")"
);
