//! The service process: the gRPC server and the life of a service, which ties the
//! layers below together.

pub mod server;
pub mod service;
