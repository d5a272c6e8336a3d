//! Reports: the sprint burndown (from the task service's estimation logs, with an ideal
//! line) and velocity (story points done per completed sprint). Reports change nothing,
//! so there is no store and there are no events: they read the sprint aggregate's store
//! and the other services.

pub mod api;
pub mod commands;
pub mod domain;
