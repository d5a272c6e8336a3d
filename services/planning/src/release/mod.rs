//! Releases, and scheduling backlog items for them (membership lives on the item).

pub mod api;
pub mod commands;
pub mod domain;
pub mod events;
pub mod mapping;
pub mod store;
