//! The tenant's team (IDDD's TeamMember and ProductOwner): who can volunteer for tasks
//! and own products. The task service keeps the part volunteering needs, pushed by
//! `commands` before each change is acknowledged and by `peer_sync` when planning starts.

pub mod api;
pub mod commands;
pub mod domain;
pub mod events;
pub mod mapping;
pub mod store;
