//! Sprints: PLANNED -> ACTIVE -> COMPLETED (one active sprint per product), committing
//! backlog items to them (membership lives on the item), and the completion summary.

pub mod api;
pub mod commands;
pub mod domain;
pub mod events;
pub mod mapping;
pub mod store;
