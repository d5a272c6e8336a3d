//! Optimistic concurrency for aggregate writes: read, decide, then write with
//! `WHERE version = <read version>`. A write that finds the version moved lost a race:
//! with an `expected_version` the caller learns (`ABORTED`); without one the command is
//! simply decided again on fresh state.

use std::future::Future;

use crate::domain::error::{AppError, AppResult};

/// How one attempt ended.
pub enum Attempt<T> {
    /// The write landed (or there was nothing to write).
    Done(T),
    /// Another writer changed the aggregate between our read and our write.
    LostRace,
}

/// Attempts before giving up on a hot aggregate.
pub const MAX_ATTEMPTS: usize = 16;

/// Runs `attempt` until it lands, retrying lost races unless the caller named an
/// `expected_version`. `what` names the aggregate in errors, e.g. `task 0190…`.
pub async fn retry_lost_races<T, F, Fut>(
    what: &str,
    expected_version: Option<i64>,
    mut attempt: F,
) -> AppResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = AppResult<Attempt<T>>>,
{
    for _ in 0..MAX_ATTEMPTS {
        match attempt().await? {
            Attempt::Done(value) => return Ok(value),
            Attempt::LostRace if expected_version.is_some() => {
                return Err(AppError::Aborted(format!(
                    "{what} changed concurrently; re-read and retry"
                )));
            }
            Attempt::LostRace => {}
        }
    }
    Err(AppError::Aborted(format!(
        "{what} is being changed by many writers at once; retry"
    )))
}

/// Checks a caller's `expected_version` against the version just read.
pub fn check_version(what: &str, expected_version: Option<i64>, actual: i64) -> AppResult<()> {
    match expected_version {
        Some(expected) if expected != actual => {
            Err(AppError::stale_version(what, expected, actual))
        }
        _ => Ok(()),
    }
}
