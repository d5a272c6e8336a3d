//! The planning game: commands that span aggregates, carried out through the
//! backlog-item service. Each is safe to retry: every downstream create uses a request id
//! derived from the command's own (`peers::step_request_id`), and a removal that already
//! happened counts as done.
//!
//! The game has no aggregate of its own, so no store and no events: the backlog-item
//! service stores what it changes and emits the events.

pub mod api;
pub mod commands;
pub mod domain;
pub mod mapping;
