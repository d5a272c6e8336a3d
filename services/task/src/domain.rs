//! The Task aggregate's rules, free of I/O: how an estimate or a status change moves a
//! task's hours and status. Status and hours never contradict each other: zero hours is
//! DONE, and DONE is zero hours.

use agilepm_platform::error::{AppError, AppResult};
use agilepm_proto::task::v1::TaskStatus;
use chrono::NaiveDate;

/// Largest estimate accepted, in hours.
pub const MAX_HOURS: i32 = 1000;

/// Parses a request's hours.
pub fn hours(field: &str, value: i32) -> AppResult<i32> {
    if (0..=MAX_HOURS).contains(&value) {
        Ok(value)
    } else {
        Err(AppError::invalid(
            field,
            format!("must be a whole number of hours from 0 to {MAX_HOURS}, got {value}"),
        ))
    }
}

/// The part of a task an estimate or status change acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Current status.
    pub status: TaskStatus,
    /// Current remaining hours.
    pub hours: i32,
    /// Date of the newest estimation log entry, if any.
    pub latest_log_date: Option<NaiveDate>,
}

/// What an estimate does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EstimateEffect {
    /// Progress after the estimate.
    pub after: Progress,
    /// Whether the log entry for the date is written (false: it already says this).
    pub writes_log: bool,
}

/// The status a task with `hours` remaining takes, coming from `status`.
fn status_for(status: TaskStatus, hours: i32) -> TaskStatus {
    match (hours, status) {
        (0, _) => TaskStatus::Done,
        (_, TaskStatus::NotStarted | TaskStatus::Done | TaskStatus::Unspecified) => {
            TaskStatus::InProgress
        }
        (_, other) => other,
    }
}

/// The initial progress of a task defined with `hours` (logged for `today`).
pub fn defined(hours: i32, today: NaiveDate) -> Progress {
    let status = if hours == 0 {
        TaskStatus::Done
    } else {
        TaskStatus::NotStarted
    };
    Progress {
        status,
        hours,
        latest_log_date: Some(today),
    }
}

/// Estimates `hours` remaining as of `date`, where `logged_that_day` is the log entry
/// already recorded for that date.
///
/// An estimate for the newest date (or later) sets the task's current hours and status.
/// A back-dated estimate (older than the newest entry) corrects history only: it
/// replaces that day's entry, which the burndown reads, but does not override a newer
/// estimate.
pub fn estimate(
    before: Progress,
    hours: i32,
    date: NaiveDate,
    logged_that_day: Option<i32>,
) -> EstimateEffect {
    let current = before.latest_log_date.is_none_or(|latest| date >= latest);
    let writes_log = logged_that_day != Some(hours);
    if !current {
        return EstimateEffect {
            after: before,
            writes_log,
        };
    }
    let after = Progress {
        status: if hours == before.hours {
            before.status
        } else {
            status_for(before.status, hours)
        },
        hours,
        latest_log_date: Some(
            before
                .latest_log_date
                .map_or(date, |latest| latest.max(date)),
        ),
    };
    EstimateEffect { after, writes_log }
}

/// What a status change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusEffect {
    /// Progress after the change.
    pub after: Progress,
    /// Whether the change zeroed the hours, which is logged as `today`'s estimate.
    pub zeroed_hours: bool,
}

/// Changes the status by hand.
pub fn change_status(
    before: Progress,
    status: TaskStatus,
    today: NaiveDate,
) -> AppResult<StatusEffect> {
    match status {
        TaskStatus::Unspecified => Err(AppError::invalid("status", "required")),
        TaskStatus::Done => Ok(StatusEffect {
            after: Progress {
                status,
                hours: 0,
                latest_log_date: Some(before.latest_log_date.map_or(today, |l| l.max(today))),
            },
            zeroed_hours: before.hours != 0,
        }),
        _ if before.hours == 0 => Err(AppError::precondition(format!(
            "a task with 0 hours remaining is DONE; estimate hours above 0 to make it {}",
            status.as_str_name().trim_start_matches("TASK_STATUS_")
        ))),
        _ => Ok(StatusEffect {
            after: Progress { status, ..before },
            zeroed_hours: false,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
    }

    fn progress(status: TaskStatus, hours: i32, latest: u32) -> Progress {
        Progress {
            status,
            hours,
            latest_log_date: Some(day(latest)),
        }
    }

    #[test]
    fn hours_are_bounded() {
        assert!(hours("hours_remaining", -1).is_err());
        assert!(hours("hours_remaining", 1001).is_err());
        assert_eq!(hours("hours_remaining", 1000).unwrap(), 1000);
        assert_eq!(hours("hours_remaining", 0).unwrap(), 0);
    }

    #[test]
    fn defining_with_zero_hours_is_done() {
        assert_eq!(defined(0, day(1)).status, TaskStatus::Done);
        assert_eq!(defined(8, day(1)).status, TaskStatus::NotStarted);
    }

    #[test]
    fn an_estimate_of_zero_finishes_the_task() {
        let effect = estimate(progress(TaskStatus::InProgress, 3, 1), 0, day(2), None);
        assert_eq!(effect.after.status, TaskStatus::Done);
        assert_eq!(effect.after.hours, 0);
        assert!(effect.writes_log);
    }

    #[test]
    fn an_estimate_above_zero_starts_or_reopens_but_keeps_impeded() {
        for (from, to) in [
            (TaskStatus::NotStarted, TaskStatus::InProgress),
            (TaskStatus::Done, TaskStatus::InProgress),
            (TaskStatus::InProgress, TaskStatus::InProgress),
            (TaskStatus::Impeded, TaskStatus::Impeded),
        ] {
            let hours = if from == TaskStatus::Done { 0 } else { 5 };
            let effect = estimate(progress(from, hours, 1), 4, day(2), None);
            assert_eq!(effect.after.status, to, "from {from:?}");
        }
    }

    #[test]
    fn the_same_estimate_again_changes_nothing() {
        let before = progress(TaskStatus::NotStarted, 5, 2);
        let effect = estimate(before, 5, day(2), Some(5));
        assert_eq!(effect.after, before);
        assert!(!effect.writes_log);
    }

    #[test]
    fn a_second_estimate_the_same_day_replaces_the_first() {
        let effect = estimate(progress(TaskStatus::InProgress, 5, 2), 3, day(2), Some(5));
        assert!(effect.writes_log);
        assert_eq!(effect.after.hours, 3);
    }

    #[test]
    fn a_back_dated_estimate_corrects_history_only() {
        let before = progress(TaskStatus::InProgress, 4, 5);
        let effect = estimate(before, 9, day(3), None);
        assert!(effect.writes_log);
        assert_eq!(effect.after, before, "today's estimate still rules");
    }

    #[test]
    fn marking_done_zeroes_hours_and_other_statuses_need_hours() {
        let effect = change_status(
            progress(TaskStatus::InProgress, 6, 1),
            TaskStatus::Done,
            day(2),
        )
        .unwrap();
        assert_eq!(effect.after.hours, 0);
        assert!(effect.zeroed_hours);
        assert_eq!(effect.after.latest_log_date, Some(day(2)));
        let done = progress(TaskStatus::Done, 0, 1);
        assert!(matches!(
            change_status(done, TaskStatus::InProgress, day(2)),
            Err(AppError::FailedPrecondition(_))
        ));
        assert!(change_status(done, TaskStatus::Unspecified, day(2)).is_err());
        let impeded = change_status(
            progress(TaskStatus::InProgress, 6, 1),
            TaskStatus::Impeded,
            day(2),
        )
        .unwrap();
        assert_eq!(impeded.after.hours, 6);
        assert!(!impeded.zeroed_hours);
    }
}
