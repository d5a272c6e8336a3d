//! Use cases: the product owner's scope, ranked within a product, retired when out of
//! scope.

pub mod api;
pub mod commands;
pub mod domain;
pub mod events;
pub mod mapping;
pub mod store;
