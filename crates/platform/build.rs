//! Rebuilds the crate when a migration file is added, and records the git revision the
//! binaries report with `--version`.
//!
//! `sqlx::migrate!` embeds the migrations directory at compile time, and Cargo re-runs
//! the macro only when a file it already knows about changes; a new migration is a new
//! file, so without the first line an incremental build keeps migrating to the previous
//! schema (the build script sqlx's documentation recommends).
//!
//! The revision is `AGILEPM_GIT_REVISION` if set (an image built without `.git`), else
//! `git rev-parse`. Release builds follow every commit; debug builds do not, because
//! everything depends on this crate and a rebuild of the workspace per commit would cost
//! more than a stale revision in a development binary is worth.
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-env-changed=AGILEPM_GIT_REVISION");
    let revision = std::env::var("AGILEPM_GIT_REVISION")
        .ok()
        .filter(|revision| !revision.is_empty())
        .or_else(git_revision)
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=AGILEPM_GIT_REVISION={revision}");
}

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .filter(|text| !text.is_empty())
}

fn git_revision() -> Option<String> {
    let revision = git(&["rev-parse", "--short=12", "HEAD"])?;
    let release = std::env::var("PROFILE").as_deref() == Ok("release");
    if release && let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={git_dir}/{branch}");
        }
        println!("cargo:rerun-if-changed={git_dir}/packed-refs");
    }
    Some(revision)
}
