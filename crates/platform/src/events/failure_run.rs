//! A run of failures of work retried until it succeeds (following a feed, relaying the
//! outbox, consuming a stream): each failure is a warning, since a peer restarting or
//! being deployed breaks a stream now and then; a run lasting [`PERSISTENT_FAILURE`] is a
//! fault, reported once at error level. Progress ends the run.

use std::time::{Duration, Instant};

/// How long retried work may keep failing before it is reported as a fault.
pub const PERSISTENT_FAILURE: Duration = Duration::from_secs(10);

/// The current run of failures of one piece of retried work.
#[derive(Debug)]
pub struct FailureRun {
    /// What is retried, as log lines name it ("following the feed").
    what: &'static str,
    /// Failures since the last progress.
    failures: u32,
    /// When the run began.
    since: Instant,
    /// Whether the run was reported at error level.
    reported: bool,
}

impl FailureRun {
    /// No failure yet of the work `what` names.
    pub fn new(what: &'static str) -> FailureRun {
        FailureRun {
            what,
            failures: 0,
            since: Instant::now(),
            reported: false,
        }
    }

    /// The work made progress: the next failure starts a new run.
    pub fn progressed(&mut self) {
        self.failures = 0;
    }

    /// Counts a failure and logs it; the failures of the run so far (for backoff).
    pub fn failed(&mut self, error: &str) -> u32 {
        self.record(error, None)
    }

    /// Like [`FailureRun::failed`], for a failure that retrying will not cure: reported
    /// at error level at once (once per run), with `fault` saying why.
    pub fn failed_for_good(&mut self, error: &str, fault: &str) -> u32 {
        self.record(error, Some(fault))
    }

    fn record(&mut self, error: &str, fault: Option<&str>) -> u32 {
        if self.failures == 0 {
            self.since = Instant::now();
            self.reported = false;
        }
        self.failures = self.failures.saturating_add(1);
        let (what, failures, failing_for) = (self.what, self.failures, self.since.elapsed());
        match fault {
            Some(fault) if !self.reported => {
                self.reported = true;
                tracing::error!(error, "{what}: {fault}");
            }
            _ if failing_for >= PERSISTENT_FAILURE && !self.reported => {
                self.reported = true;
                tracing::error!(
                    error,
                    failures,
                    ?failing_for,
                    "{what} keeps failing; retrying"
                );
            }
            _ => tracing::warn!(error, failures, "{what} failed; retrying"),
        }
        failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_starts_a_new_run() {
        let mut run = FailureRun::new("testing");
        assert_eq!(run.failed("a"), 1);
        assert_eq!(run.failed("b"), 2);
        run.progressed();
        assert_eq!(run.failed("c"), 1);
        assert_eq!(run.failed_for_good("d", "gone"), 2);
        assert!(run.reported, "a failure for good is reported at once");
        run.progressed();
        run.failed("e");
        assert!(!run.reported, "a new run is reported anew");
    }
}
