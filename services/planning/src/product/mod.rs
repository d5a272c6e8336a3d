//! Products: create, read, list, update, including the status transition mode that the
//! backlog-item service applies to finished items.

pub mod api;
pub mod commands;
pub mod domain;
pub mod events;
pub mod mapping;
pub mod store;
