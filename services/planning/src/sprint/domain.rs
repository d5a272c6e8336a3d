//! The Sprint aggregate's rules, free of I/O and of protobuf.

use agilepm_platform::domain::error::{AppError, AppResult};
use agilepm_platform::numbered_enum;
use chrono::NaiveDate;

numbered_enum! {
    /// Where a sprint stands.
    pub enum State {
        /// Scheduled, not started.
        Planned = 1,
        /// Running; at most one per product.
        Active = 2,
        /// Finished.
        Completed = 3,
    }
}

impl State {
    /// The name refusals use, e.g. `ACTIVE`.
    pub fn name(self) -> &'static str {
        match self {
            State::Planned => "PLANNED",
            State::Active => "ACTIVE",
            State::Completed => "COMPLETED",
        }
    }
}

/// What a completed sprint achieved, fixed when it completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Items DONE at completion.
    pub done_backlog_item_ids: Vec<String>,
    /// Items still committed but not DONE at completion.
    pub unfinished_backlog_item_ids: Vec<String>,
    /// Story points of the DONE items.
    pub story_points_done: i32,
    /// When the sprint completed (µs).
    pub complete_time_us: i64,
}

/// A sprint of a product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sprint {
    /// Id (UUID).
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Product.
    pub product_id: String,
    /// Name.
    pub name: String,
    /// What the team aims for.
    pub goal: String,
    /// First day.
    pub begin_date: NaiveDate,
    /// Last day (on or after the first).
    pub end_date: NaiveDate,
    /// What the team learned.
    pub retrospective: String,
    /// Where it stands.
    pub state: State,
    /// Set when it completes.
    pub summary: Option<Summary>,
    /// Optimistic concurrency version.
    pub version: i64,
    /// Created (µs).
    pub create_time_us: i64,
}

/// A sprint's days: it ends on or after the day it begins (`field` names the end).
pub fn period(begin: NaiveDate, end: NaiveDate, end_field: &str) -> AppResult<()> {
    if end < begin {
        return Err(AppError::invalid(
            end_field,
            "a sprint ends on or after the day it begins",
        ));
    }
    Ok(())
}

/// A checked change of one field (an update mask's path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// New name.
    Name(String),
    /// New goal.
    Goal(String),
    /// New retrospective.
    Retrospective(String),
    /// New first day.
    BeginDate(NaiveDate),
    /// New last day.
    EndDate(NaiveDate),
}

/// `before` with `changes`. A COMPLETED sprint's days are history: they do not move.
pub fn update(before: &Sprint, changes: &[Change]) -> AppResult<Sprint> {
    let mut after = before.clone();
    for change in changes {
        match change.clone() {
            Change::Name(name) => after.name = name,
            Change::Goal(goal) => after.goal = goal,
            Change::Retrospective(retrospective) => after.retrospective = retrospective,
            Change::BeginDate(day) => after.begin_date = day,
            Change::EndDate(day) => after.end_date = day,
        }
    }
    let moved = after.begin_date != before.begin_date || after.end_date != before.end_date;
    if moved && before.state == State::Completed {
        return Err(AppError::precondition(
            "a COMPLETED sprint's dates cannot change",
        ));
    }
    period(after.begin_date, after.end_date, "sprint.end_date")?;
    Ok(after)
}

/// Starts a PLANNED sprint. (One ACTIVE sprint per product is the store's constraint.)
pub fn start(before: &Sprint) -> AppResult<Sprint> {
    match before.state {
        State::Planned => Ok(Sprint {
            state: State::Active,
            ..before.clone()
        }),
        other => Err(AppError::precondition(format!(
            "only PLANNED sprints can start (this one is {})",
            other.name()
        ))),
    }
}

/// Whether `sprint` may complete: only an ACTIVE one.
pub fn may_complete(sprint: &Sprint) -> AppResult<()> {
    match sprint.state {
        State::Active => Ok(()),
        other => Err(AppError::precondition(format!(
            "only ACTIVE sprints can complete (this one is {})",
            other.name()
        ))),
    }
}

/// Completes an ACTIVE sprint with `summary`.
pub fn complete(before: &Sprint, summary: &Summary) -> AppResult<Sprint> {
    may_complete(before)?;
    Ok(Sprint {
        state: State::Completed,
        summary: Some(summary.clone()),
        ..before.clone()
    })
}

/// Whether items may be committed to `sprint`: not once it is COMPLETED.
pub fn accepts_commitments(sprint: &Sprint) -> AppResult<()> {
    if sprint.state == State::Completed {
        return Err(AppError::precondition(format!(
            "sprint {} is COMPLETED",
            sprint.id
        )));
    }
    Ok(())
}

/// Where a committed item stood when its sprint completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedItem {
    /// The item.
    pub id: String,
    /// DONE.
    pub done: bool,
    /// Still COMMITTED (not DONE, not removed).
    pub unfinished: bool,
    /// Its story points as a number.
    pub points: i32,
}

/// The summary of a sprint completing at `now_us` with `items` committed to it.
pub fn summarize(items: &[CommittedItem], now_us: i64) -> Summary {
    Summary {
        done_backlog_item_ids: items
            .iter()
            .filter(|i| i.done)
            .map(|i| i.id.clone())
            .collect(),
        unfinished_backlog_item_ids: items
            .iter()
            .filter(|i| i.unfinished)
            .map(|i| i.id.clone())
            .collect(),
        story_points_done: items.iter().filter(|i| i.done).map(|i| i.points).sum(),
        complete_time_us: now_us,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
    }

    fn sprint(state: State) -> Sprint {
        Sprint {
            id: "s".into(),
            tenant_id: "t".into(),
            product_id: "p".into(),
            name: "Sprint 1".into(),
            goal: String::new(),
            begin_date: day(2),
            end_date: day(13),
            retrospective: String::new(),
            state,
            summary: None,
            version: 1,
            create_time_us: 1,
        }
    }

    #[test]
    fn a_sprint_runs_planned_active_completed_and_only_forward() {
        let planned = sprint(State::Planned);
        let active = start(&planned).unwrap();
        assert_eq!(active.state, State::Active);
        let error = start(&active).unwrap_err();
        assert!(error.to_string().contains("this one is ACTIVE"), "{error}");
        assert!(complete(&planned, &summarize(&[], 5)).is_err());
        let completed = complete(&active, &summarize(&[], 5)).unwrap();
        assert_eq!(completed.state, State::Completed);
        assert_eq!(completed.summary.as_ref().unwrap().complete_time_us, 5);
        assert!(start(&completed).is_err());
        assert!(may_complete(&completed).is_err());
    }

    #[test]
    fn a_sprint_ends_on_or_after_it_begins() {
        assert!(period(day(2), day(2), "end").is_ok());
        let error = period(day(3), day(2), "sprint.end_date").unwrap_err();
        assert!(error.to_string().contains("sprint.end_date"), "{error}");
        let planned = sprint(State::Planned);
        assert!(update(&planned, &[Change::BeginDate(day(14))]).is_err());
        let moved = update(
            &planned,
            &[Change::BeginDate(day(14)), Change::EndDate(day(20))],
        );
        assert_eq!(moved.unwrap().begin_date, day(14));
    }

    #[test]
    fn a_completed_sprint_keeps_its_days_but_takes_a_retrospective() {
        let completed = sprint(State::Completed);
        assert!(update(&completed, &[Change::EndDate(day(14))]).is_err());
        let learned = update(&completed, &[Change::Retrospective("ship smaller".into())]);
        assert_eq!(learned.unwrap().retrospective, "ship smaller");
        // Naming the same days again is no move.
        assert!(update(&completed, &[Change::BeginDate(day(2))]).is_ok());
    }

    #[test]
    fn only_open_sprints_take_commitments() {
        assert!(accepts_commitments(&sprint(State::Planned)).is_ok());
        assert!(accepts_commitments(&sprint(State::Active)).is_ok());
        assert!(accepts_commitments(&sprint(State::Completed)).is_err());
    }

    #[test]
    fn the_summary_counts_done_points_and_lists_the_unfinished() {
        let item = |id: &str, done: bool, unfinished: bool, points: i32| CommittedItem {
            id: id.into(),
            done,
            unfinished,
            points,
        };
        let summary = summarize(
            &[
                item("a", true, false, 5),
                item("b", false, true, 8),
                item("c", true, false, 3),
                item("d", false, false, 13),
            ],
            9,
        );
        assert_eq!(summary.done_backlog_item_ids, ["a", "c"]);
        assert_eq!(summary.unfinished_backlog_item_ids, ["b"]);
        assert_eq!(summary.story_points_done, 8);
    }
}
