//! Rebuilds the crate when a migration file is added. `sqlx::migrate!` embeds the
//! migrations directory at compile time, and Cargo re-runs the macro only when a file it
//! already knows about changes; a new migration is a new file, so without this an
//! incremental build keeps migrating to the previous schema (the build script sqlx's
//! documentation recommends).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
