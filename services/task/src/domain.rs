//! The Task aggregate's rules, free of I/O: how an estimate or a status change moves a
//! task's hours and status. Status and hours never contradict each other: zero hours is
//! DONE, and DONE is zero hours.

use agilepm_platform::domain::error::{AppError, AppResult};
use agilepm_platform::domain::team_zone::TeamZone;
use agilepm_platform::numbered_enum;
use chrono::NaiveDate;

numbered_enum! {
    /// Where a task stands.
    pub enum Status {
        /// Nobody has started.
        NotStarted = 1,
        /// Being worked on.
        InProgress = 2,
        /// Blocked; stays IMPEDED when re-estimated above zero until someone clears it.
        Impeded = 3,
        /// Finished; zero hours remain.
        Done = 4,
    }
}

impl Status {
    /// The name refusals use, e.g. `IN_PROGRESS`.
    pub fn name(self) -> &'static str {
        match self {
            Status::NotStarted => "NOT_STARTED",
            Status::InProgress => "IN_PROGRESS",
            Status::Impeded => "IMPEDED",
            Status::Done => "DONE",
        }
    }
}

/// A task of a backlog item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// Task id (UUID).
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Backlog item it belongs to.
    pub backlog_item_id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Volunteer, empty if none.
    pub volunteer_id: String,
    /// Status.
    pub status: Status,
    /// Current remaining hours.
    pub hours: i32,
    /// Date of the newest log entry.
    pub latest_log_day: Option<NaiveDate>,
    /// Optimistic concurrency version.
    pub version: i64,
    /// Created (µs).
    pub create_time_us: i64,
    /// Last changed (µs).
    pub update_time_us: i64,
    /// Removed (µs), if removed.
    pub removed_time_us: Option<i64>,
}

impl Task {
    /// The part of the task the rules below decide on.
    pub fn progress(&self) -> Progress {
        Progress {
            status: self.status,
            hours: self.hours,
            latest_log_date: self.latest_log_day,
        }
    }

    /// The day the task was defined, as the team in `zone` counts days.
    pub fn defined_on(&self, zone: TeamZone) -> NaiveDate {
        zone.day_of(self.create_time_us)
    }

    /// This task with `progress` applied.
    pub fn with_progress(&self, progress: Progress) -> Task {
        Task {
            status: progress.status,
            hours: progress.hours,
            latest_log_day: progress.latest_log_date,
            ..self.clone()
        }
    }
}

/// A day's entry of a task's estimation log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The day estimated.
    pub day: NaiveDate,
    /// Hours remaining that day.
    pub hours: i32,
    /// When it was recorded (µs).
    pub record_time_us: i64,
    /// Who gave it.
    pub estimated_by: String,
}

/// The hours and number of a backlog item's live tasks: the basis the coordinator
/// reconciles the item's status from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// The backlog item.
    pub backlog_item_id: String,
    /// Sum of its tasks' remaining hours.
    pub hours_remaining: i64,
    /// Number of its tasks.
    pub task_count: i64,
    /// Increases with every change of the above; zero if the item never had tasks.
    pub revision: i64,
}

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

/// How far before the day a task was defined an estimate may be dated: a year, so a
/// team can correct any day of a long release's burndown, while a typo such as
/// 0026-12-01 is refused.
pub const EARLIEST_ESTIMATE_BEFORE_DEFINED_DAYS: i64 = 366;

/// How far after the team's today an estimate may be dated: one day, leeway for a team
/// whose zone is not set yet (still UTC) although its day has begun (UTC+14), while a
/// typo such as 2062-01-01, which would pin the task's current hours until that date, is
/// refused.
pub const LATEST_ESTIMATE_AFTER_TODAY_DAYS: i64 = 1;

/// Checks the `date` of an estimate of a task defined on `defined_on`, given the team's
/// `today` in its `zone` (both in the team's days): from [`EARLIEST_ESTIMATE_BEFORE_DEFINED_DAYS`] before the definition to
/// [`LATEST_ESTIMATE_AFTER_TODAY_DAYS`] after today. The refusal names the bound.
pub fn estimate_date(
    field: &str,
    date: NaiveDate,
    defined_on: NaiveDate,
    today: NaiveDate,
    zone: TeamZone,
) -> AppResult<NaiveDate> {
    let latest = today + chrono::Days::new(LATEST_ESTIMATE_AFTER_TODAY_DAYS as u64);
    let earliest = defined_on - chrono::Days::new(EARLIEST_ESTIMATE_BEFORE_DEFINED_DAYS as u64);
    if date > latest {
        Err(AppError::invalid(
            field,
            format!(
                "{date} is in the future: an estimate may be dated at most {latest} \
                 (the team's today, {today} in {}, plus {LATEST_ESTIMATE_AFTER_TODAY_DAYS} \
                 day)",
                zone.name()
            ),
        ))
    } else if date < earliest {
        Err(AppError::invalid(
            field,
            format!(
                "{date} is too early: an estimate may be dated at the earliest {earliest} \
                 ({EARLIEST_ESTIMATE_BEFORE_DEFINED_DAYS} days before the task was defined \
                 on {defined_on})"
            ),
        ))
    } else {
        Ok(date)
    }
}

/// The part of a task an estimate or status change acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Current status.
    pub status: Status,
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
fn status_for(status: Status, hours: i32) -> Status {
    match (hours, status) {
        (0, _) => Status::Done,
        (_, Status::NotStarted | Status::Done) => Status::InProgress,
        (_, other) => other,
    }
}

/// The initial progress of a task defined with `hours` (logged for `today`).
pub fn defined(hours: i32, today: NaiveDate) -> Progress {
    let status = if hours == 0 {
        Status::Done
    } else {
        Status::NotStarted
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
    status: Status,
    today: NaiveDate,
) -> AppResult<StatusEffect> {
    match status {
        Status::Done => Ok(StatusEffect {
            after: Progress {
                status,
                hours: 0,
                latest_log_date: Some(before.latest_log_date.map_or(today, |l| l.max(today))),
            },
            zeroed_hours: before.hours != 0,
        }),
        _ if before.hours == 0 => Err(AppError::precondition(format!(
            "a task with 0 hours remaining is DONE; estimate hours above 0 to make it {}",
            status.name()
        ))),
        _ => Ok(StatusEffect {
            after: Progress { status, ..before },
            zeroed_hours: false,
        }),
    }
}

/// What the planning service last said of one team member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// The member is enabled.
    pub enabled: bool,
    /// The member holds the team-member role.
    pub team_member: bool,
}

/// A task's volunteer is an enabled team member: `standing` is what is recorded of
/// `member_id` (none: not on the team). Refusals name `volunteer_id` and say why.
pub fn volunteer(member_id: &str, standing: Option<Standing>) -> AppResult<()> {
    let why = match standing {
        None => "is not on the team; add them with the planning service's TeamService.AddMember",
        Some(Standing { enabled: false, .. }) => "is disabled; enable them first",
        Some(Standing {
            team_member: false, ..
        }) => "does not hold the team-member role (MEMBER_ROLE_TEAM_MEMBER)",
        Some(_) => return Ok(()),
    };
    Err(AppError::precondition(format!(
        "volunteer_id: member {member_id:?} {why}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
    }

    fn progress(status: Status, hours: i32, latest: u32) -> Progress {
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
    fn estimate_dates_are_bounded_by_today_and_the_definition() {
        let (defined_on, today) = (day(10), day(20));
        for ok in [
            day(21),
            day(20),
            day(1),
            defined_on - chrono::Days::new(366),
        ] {
            assert_eq!(
                estimate_date("date", ok, defined_on, today, TeamZone::UTC).unwrap(),
                ok
            );
        }
        let la = TeamZone::parse("time_zone", "America/Los_Angeles").unwrap();
        let future = estimate_date("date", day(22), defined_on, today, la).unwrap_err();
        assert!(
            future.to_string().contains(
                "at most 2026-11-21 (the team's today, 2026-11-20 in America/Los_Angeles"
            ),
            "{future}"
        );
        let early = defined_on - chrono::Days::new(367);
        let early = estimate_date("date", early, defined_on, today, TeamZone::UTC).unwrap_err();
        assert!(
            early.to_string().contains("at the earliest 2025-11-09"),
            "{early}"
        );
        for far in ["0000-01-01", "9999-12-31"] {
            let far = NaiveDate::parse_from_str(far, "%Y-%m-%d").unwrap();
            assert!(estimate_date("date", far, defined_on, today, TeamZone::UTC).is_err());
        }
    }

    #[test]
    fn defining_with_zero_hours_is_done() {
        assert_eq!(defined(0, day(1)).status, Status::Done);
        assert_eq!(defined(8, day(1)).status, Status::NotStarted);
    }

    #[test]
    fn an_estimate_of_zero_finishes_the_task() {
        let effect = estimate(progress(Status::InProgress, 3, 1), 0, day(2), None);
        assert_eq!(effect.after.status, Status::Done);
        assert_eq!(effect.after.hours, 0);
        assert!(effect.writes_log);
    }

    #[test]
    fn an_estimate_above_zero_starts_or_reopens_but_keeps_impeded() {
        for (from, to) in [
            (Status::NotStarted, Status::InProgress),
            (Status::Done, Status::InProgress),
            (Status::InProgress, Status::InProgress),
            (Status::Impeded, Status::Impeded),
        ] {
            let hours = if from == Status::Done { 0 } else { 5 };
            let effect = estimate(progress(from, hours, 1), 4, day(2), None);
            assert_eq!(effect.after.status, to, "from {from:?}");
        }
    }

    #[test]
    fn the_same_estimate_again_changes_nothing() {
        let before = progress(Status::NotStarted, 5, 2);
        let effect = estimate(before, 5, day(2), Some(5));
        assert_eq!(effect.after, before);
        assert!(!effect.writes_log);
    }

    #[test]
    fn a_second_estimate_the_same_day_replaces_the_first() {
        let effect = estimate(progress(Status::InProgress, 5, 2), 3, day(2), Some(5));
        assert!(effect.writes_log);
        assert_eq!(effect.after.hours, 3);
    }

    #[test]
    fn a_back_dated_estimate_corrects_history_only() {
        let before = progress(Status::InProgress, 4, 5);
        let effect = estimate(before, 9, day(3), None);
        assert!(effect.writes_log);
        assert_eq!(effect.after, before, "today's estimate still rules");
    }

    #[test]
    fn marking_done_zeroes_hours_and_other_statuses_need_hours() {
        let effect =
            change_status(progress(Status::InProgress, 6, 1), Status::Done, day(2)).unwrap();
        assert_eq!(effect.after.hours, 0);
        assert!(effect.zeroed_hours);
        assert_eq!(effect.after.latest_log_date, Some(day(2)));
        let done = progress(Status::Done, 0, 1);
        assert!(matches!(
            change_status(done, Status::InProgress, day(2)),
            Err(AppError::FailedPrecondition(_))
        ));
        let impeded =
            change_status(progress(Status::InProgress, 6, 1), Status::Impeded, day(2)).unwrap();
        assert_eq!(impeded.after.hours, 6);
        assert!(!impeded.zeroed_hours);
    }
}
