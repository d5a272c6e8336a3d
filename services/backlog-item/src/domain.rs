//! The BacklogItem aggregate, free of I/O and of protobuf: the item, its status machine
//! and its derived values.
//!
//! ```text
//! PLANNED --schedule--> SCHEDULED --commit--> COMMITTED --all task hours 0--> DONE
//!    ^------unschedule------'   ^-----uncommit-----'   ^----hours > 0 again----'
//! PLANNED | SCHEDULED | COMMITTED --remove--> REMOVED
//! ```

use agilepm_platform::domain::error::{AppError, AppResult};
use agilepm_platform::numbered_enum;

numbered_enum! {
    /// Where an item stands in the status machine.
    pub enum Status {
        /// In the product backlog, not yet scheduled.
        Planned = 1,
        /// Scheduled for a release.
        Scheduled = 2,
        /// Committed to a sprint.
        Committed = 3,
        /// Finished.
        Done = 4,
        /// Removed from the backlog; final.
        Removed = 5,
    }
}

impl Status {
    /// The name refusals use, e.g. `COMMITTED`.
    pub fn name(self) -> &'static str {
        match self {
            Status::Planned => "PLANNED",
            Status::Scheduled => "SCHEDULED",
            Status::Committed => "COMMITTED",
            Status::Done => "DONE",
            Status::Removed => "REMOVED",
        }
    }
}

numbered_enum! {
    /// What kind of work an item is.
    pub enum ItemType {
        /// New capability.
        Feature = 1,
        /// Improvement of an existing capability.
        Enhancement = 2,
        /// Something broken.
        Defect = 3,
        /// Groundwork other items build on.
        Foundation = 4,
        /// Connecting to another system.
        Integration = 5,
        /// Time-boxed research.
        Spike = 6,
    }
}

numbered_enum! {
    /// An item's size, on the planning-poker scale.
    pub enum StoryPoints {
        /// Not sized yet.
        Unsized = 0,
        /// 0 points.
        Zero = 1,
        /// 1 point.
        One = 2,
        /// 2 points.
        Two = 3,
        /// 3 points.
        Three = 4,
        /// 5 points.
        Five = 5,
        /// 8 points.
        Eight = 6,
        /// 13 points.
        Thirteen = 7,
        /// 20 points.
        Twenty = 8,
        /// 40 points.
        Forty = 9,
        /// 100 points.
        OneHundred = 10,
        /// Too big or too vague to size.
        Unestimable = 11,
    }
}

numbered_enum! {
    /// How an item whose tasks are all finished moves, as its product says.
    pub enum TransitionMode {
        /// It becomes DONE by itself.
        Automatic = 1,
        /// It awaits a product owner's acceptance.
        Manual = 2,
    }
}

numbered_enum! {
    /// What applying a task-hours basis did.
    pub enum Outcome {
        /// The item's status or acceptance flag changed.
        Changed = 1,
        /// Newer basis, same status: only the revision guard moved.
        Unchanged = 2,
        /// The basis was not newer than the last one applied: nothing moved.
        IgnoredStale = 3,
    }
}

/// A product owner's ratings of an item, each 1 to 9.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusinessPriority {
    /// Value of having it.
    pub benefit: i32,
    /// Cost of not having it.
    pub penalty: i32,
    /// Cost of building it.
    pub cost: i32,
    /// Risk of building it.
    pub risk: i32,
}

/// The fields the status machine reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Status.
    pub status: Status,
    /// Release, empty if none.
    pub release_id: String,
    /// Sprint, empty if none.
    pub sprint_id: String,
    /// MANUAL mode: all tasks done, nobody accepted yet.
    pub awaiting_acceptance: bool,
}

impl Placement {
    /// Where a newly planned item stands.
    pub fn planned() -> Placement {
        Placement {
            status: Status::Planned,
            release_id: String::new(),
            sprint_id: String::new(),
            awaiting_acceptance: false,
        }
    }
}

/// A backlog item: a story of a product, where it stands and where it ranks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BacklogItem {
    /// Id (UUID).
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Product (immutable).
    pub product_id: String,
    /// One-line summary.
    pub summary: String,
    /// Who wants what, and why.
    pub story: String,
    /// Free-form category.
    pub category: String,
    /// Kind of work.
    pub item_type: ItemType,
    /// Size.
    pub story_points: StoryPoints,
    /// Ratings; none until the product owner rates the item.
    pub business_priority: Option<BusinessPriority>,
    /// Use case it was broken out of, empty if none.
    pub use_case_id: String,
    /// Status, release, sprint, acceptance.
    pub placement: Placement,
    /// Key ordering the product backlog (ascending).
    pub rank: String,
    /// Key ordering its sprint's items (ascending); empty exactly while it is in no sprint.
    pub sprint_rank: String,
    /// Items it was split or grouped from (immutable).
    pub derived_from_ids: Vec<String>,
    /// The last task-hours basis applied (revision 0: none yet). Kept so that a commit or
    /// a mode switch settles the item against its hours in its own transaction, without
    /// waiting for a task event that may never come.
    pub tasks: TaskBasis,
    /// Optimistic concurrency version.
    pub version: i64,
    /// Created (µs).
    pub create_time_us: i64,
    /// Last changed (µs).
    pub update_time_us: i64,
}

impl BacklogItem {
    /// The derived priority (see [`priority_score`]).
    pub fn priority_score(&self) -> f64 {
        priority_score(self.business_priority.as_ref())
    }
}

fn refuse(rule: &str, status: Status) -> AppError {
    AppError::precondition(format!("{rule} (the item is {})", status.name()))
}

/// A checked change of one story field (an update mask's path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoryChange {
    /// New summary.
    Summary(String),
    /// New story.
    Story(String),
    /// New category.
    Category(String),
    /// New kind of work.
    Type(ItemType),
    /// New size.
    StoryPoints(StoryPoints),
    /// New ratings, or none.
    BusinessPriority(Option<BusinessPriority>),
    /// New use case, empty for none.
    UseCase(String),
}

/// `item` with its story changed by `changes`. A REMOVED item's story is final.
pub fn change_story(item: &BacklogItem, changes: &[StoryChange]) -> AppResult<BacklogItem> {
    if item.placement.status == Status::Removed {
        return Err(AppError::precondition("REMOVED items cannot be changed"));
    }
    let mut after = item.clone();
    for change in changes {
        match change.clone() {
            StoryChange::Summary(summary) => after.summary = summary,
            StoryChange::Story(story) => after.story = story,
            StoryChange::Category(category) => after.category = category,
            StoryChange::Type(item_type) => after.item_type = item_type,
            StoryChange::StoryPoints(points) => after.story_points = points,
            StoryChange::BusinessPriority(priority) => after.business_priority = priority,
            StoryChange::UseCase(use_case_id) => after.use_case_id = use_case_id,
        }
    }
    Ok(after)
}

/// Schedules for `release_id` (or moves to another release while not committed).
pub fn schedule(p: &Placement, release_id: &str) -> AppResult<Placement> {
    match p.status {
        Status::Planned | Status::Scheduled => Ok(Placement {
            status: Status::Scheduled,
            release_id: release_id.to_owned(),
            ..p.clone()
        }),
        Status::Committed => Err(refuse(
            "uncommit the item from its sprint before rescheduling it",
            p.status,
        )),
        _ => Err(refuse(
            "only PLANNED or SCHEDULED items can be scheduled for a release",
            p.status,
        )),
    }
}

/// Unschedules from the release.
pub fn unschedule(p: &Placement) -> AppResult<Placement> {
    match p.status {
        Status::Scheduled => Ok(Placement {
            status: Status::Planned,
            release_id: String::new(),
            ..p.clone()
        }),
        Status::Committed => Err(refuse(
            "uncommit the item from its sprint before unscheduling it",
            p.status,
        )),
        _ => Err(refuse("only SCHEDULED items can be unscheduled", p.status)),
    }
}

/// Commits to `sprint_id`; a committed item moves to the new sprint.
pub fn commit(p: &Placement, sprint_id: &str) -> AppResult<Placement> {
    match p.status {
        Status::Scheduled | Status::Committed => Ok(Placement {
            status: Status::Committed,
            sprint_id: sprint_id.to_owned(),
            ..p.clone()
        }),
        Status::Planned => Err(refuse(
            "committing to a sprint requires being scheduled for a release first",
            p.status,
        )),
        _ => Err(refuse(
            "only SCHEDULED or COMMITTED items can be committed to a sprint",
            p.status,
        )),
    }
}

/// Uncommits from the sprint.
pub fn uncommit(p: &Placement) -> AppResult<Placement> {
    match p.status {
        Status::Committed => Ok(Placement {
            status: Status::Scheduled,
            sprint_id: String::new(),
            awaiting_acceptance: false,
            ..p.clone()
        }),
        _ => Err(refuse("only COMMITTED items can be uncommitted", p.status)),
    }
}

/// Removes from the backlog.
pub fn remove(p: &Placement) -> AppResult<Placement> {
    match p.status {
        Status::Planned | Status::Scheduled | Status::Committed => Ok(Placement {
            status: Status::Removed,
            awaiting_acceptance: false,
            ..p.clone()
        }),
        _ => Err(refuse("DONE and REMOVED items cannot be removed", p.status)),
    }
}

/// A person's acceptance: COMMITTED -> DONE, in either mode, once no hours remain on the
/// item's tasks as the task service last reported them (`tasks`). In MANUAL mode it is
/// how a finished item (awaiting acceptance) becomes DONE; in AUTOMATIC mode finished
/// items become DONE by themselves, so it serves items without tasks. Accepting an item
/// with hours left would make its status contradict its hours, so it is refused; and
/// because an accepted item has no hours left, the one rule that reopens a DONE item
/// (hours above 0 again: discovered work) applies to it as to any other.
pub fn mark_done(p: &Placement, tasks: TaskBasis) -> AppResult<Placement> {
    match p.status {
        Status::Committed if tasks.hours == 0 => Ok(Placement {
            status: Status::Done,
            awaiting_acceptance: false,
            ..p.clone()
        }),
        Status::Committed => Err(AppError::precondition(format!(
            "{} hours remain on the item's tasks (task revision {}); an item is accepted \
             as DONE only once its tasks are finished",
            tasks.hours, tasks.revision
        ))),
        _ => Err(refuse("only COMMITTED items can be marked done", p.status)),
    }
}

/// An item is ordered within its sprint while it is in one: COMMITTED to it or DONE there.
pub fn rank_in_sprint(p: &Placement) -> AppResult<()> {
    match p.status {
        Status::Committed | Status::Done => Ok(()),
        _ => Err(refuse(
            "only items COMMITTED to a sprint (or DONE in it) can be moved within it",
            p.status,
        )),
    }
}

/// The task service's view of an item's tasks (all zero: no basis applied yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskBasis {
    /// Summed remaining hours.
    pub hours: i64,
    /// Number of tasks.
    pub count: i64,
    /// The task service's revision of this basis.
    pub revision: i64,
}

/// Where the rules put an item at `p` whose tasks stand at `tasks` in a product of
/// `mode`. Status follows hours from every path: a new basis ([`reconcile`]), a commit
/// or re-commit, a mode switch; each settles the item through this one function, so no
/// path can leave a status that contradicts hours and mode.
///
/// * COMMITTED with at least one task and zero hours: DONE (AUTOMATIC) or awaiting
///   acceptance (MANUAL).
/// * DONE with hours above zero: back to COMMITTED, or SCHEDULED / PLANNED if it no longer
///   has a sprint / release (discovered work, in either mode).
/// * Anything else stays where it is.
pub fn settle(p: &Placement, tasks: TaskBasis, mode: TransitionMode) -> Placement {
    let finished = tasks.count > 0 && tasks.hours == 0;
    let manual = mode == TransitionMode::Manual;
    match p.status {
        Status::Committed if finished && !manual => Placement {
            status: Status::Done,
            awaiting_acceptance: false,
            ..p.clone()
        },
        Status::Committed => Placement {
            awaiting_acceptance: finished && manual,
            ..p.clone()
        },
        Status::Done if tasks.hours > 0 => {
            let status = if !p.sprint_id.is_empty() {
                Status::Committed
            } else if !p.release_id.is_empty() {
                Status::Scheduled
            } else {
                Status::Planned
            };
            Placement {
                status,
                awaiting_acceptance: false,
                ..p.clone()
            }
        }
        _ => p.clone(),
    }
}

/// Whether an item at `p` contradicts its tasks' `tasks` and its product's `mode`: the
/// state no sequence of commands, bases and mode switches may leave behind.
pub fn contradicts(p: &Placement, tasks: TaskBasis, mode: TransitionMode) -> bool {
    settle(p, tasks, mode) != *p
}

/// Applies a task-hours basis: a basis not newer than `last_revision` is stale or a
/// duplicate and is ignored; a newer one settles the item ([`settle`]). Returns the
/// outcome and the new placement.
pub fn reconcile(
    p: &Placement,
    last_revision: i64,
    basis: TaskBasis,
    mode: TransitionMode,
) -> (Outcome, Placement) {
    if basis.revision <= last_revision {
        return (Outcome::IgnoredStale, p.clone());
    }
    let after = settle(p, basis, mode);
    let outcome = if after == *p {
        Outcome::Unchanged
    } else {
        Outcome::Changed
    };
    (outcome, after)
}

/// Checks business priority ratings: each 1 to 9 (`field` names them in a refusal).
pub fn business_priority(field: &str, value: BusinessPriority) -> AppResult<BusinessPriority> {
    for (name, rating) in [
        ("benefit", value.benefit),
        ("penalty", value.penalty),
        ("cost", value.cost),
        ("risk", value.risk),
    ] {
        if !(1..=9).contains(&rating) {
            return Err(AppError::invalid(
                format!("{field}.{name}"),
                format!("must be 1 to 9, got {rating}"),
            ));
        }
    }
    Ok(value)
}

/// The derived priority: value (benefit + penalty) over cost + risk. A per-item ratio, so
/// it does not change when other items are rated; 0 when unrated. Higher goes first.
pub fn priority_score(priority: Option<&BusinessPriority>) -> f64 {
    match priority {
        Some(p) => f64::from(p.benefit + p.penalty) / f64::from(p.cost + p.risk),
        None => 0.0,
    }
}

/// One span of time an item counted in a sprint (committed, not REMOVED): what the
/// burndown reads, so later changes do not rewrite the past days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SprintMembership {
    /// The item.
    pub backlog_item_id: String,
    /// When it was committed (µs).
    pub commit_time_us: i64,
    /// When it left (uncommitted, moved to another sprint, REMOVED), if it did (µs).
    pub leave_time_us: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(status: Status, release: &str, sprint: &str) -> Placement {
        Placement {
            status,
            release_id: release.into(),
            sprint_id: sprint.into(),
            awaiting_acceptance: false,
        }
    }

    fn basis(hours: i64, count: i64, revision: i64) -> TaskBasis {
        TaskBasis {
            hours,
            count,
            revision,
        }
    }

    #[test]
    fn the_happy_path_through_the_machine() {
        let planned = at(Status::Planned, "", "");
        let scheduled = schedule(&planned, "r1").unwrap();
        assert_eq!(
            (scheduled.status, scheduled.release_id.as_str()),
            (Status::Scheduled, "r1")
        );
        let committed = commit(&scheduled, "s1").unwrap();
        assert_eq!(
            (committed.status, committed.sprint_id.as_str()),
            (Status::Committed, "s1")
        );
        let moved = commit(&committed, "s2").unwrap();
        assert_eq!(moved.sprint_id, "s2");
        assert_eq!(uncommit(&moved).unwrap().status, Status::Scheduled);
        assert_eq!(unschedule(&scheduled).unwrap(), planned);
    }

    #[test]
    fn illegal_transitions_name_the_rule() {
        let planned = at(Status::Planned, "", "");
        let err = commit(&planned, "s").unwrap_err();
        assert!(err.to_string().contains("scheduled for a release"), "{err}");
        let done = at(Status::Done, "r", "s");
        assert!(
            remove(&done)
                .unwrap_err()
                .to_string()
                .contains("DONE and REMOVED")
        );
        assert!(remove(&at(Status::Removed, "", "")).is_err());
        assert!(unschedule(&at(Status::Committed, "r", "s")).is_err());
        assert!(schedule(&at(Status::Committed, "r", "s"), "r2").is_err());
        assert!(uncommit(&at(Status::Scheduled, "r", "")).is_err());
        assert!(mark_done(&at(Status::Scheduled, "r", ""), basis(0, 1, 1)).is_err());
        for status in [Status::Planned, Status::Scheduled, Status::Committed] {
            assert_eq!(
                remove(&at(status, "r", "s")).unwrap().status,
                Status::Removed
            );
        }
    }

    #[test]
    fn done_only_from_committed_with_tasks_and_zero_hours() {
        let committed = at(Status::Committed, "r", "s");
        let auto = TransitionMode::Automatic;
        assert_eq!(
            reconcile(&committed, 0, basis(0, 3, 1), auto).1.status,
            Status::Done
        );
        assert_eq!(
            reconcile(&committed, 0, basis(0, 0, 1), auto).0,
            Outcome::Unchanged,
            "no tasks"
        );
        assert_eq!(
            reconcile(&committed, 0, basis(2, 3, 1), auto).0,
            Outcome::Unchanged
        );
        let scheduled = at(Status::Scheduled, "r", "");
        assert_eq!(
            reconcile(&scheduled, 0, basis(0, 3, 1), auto).1.status,
            Status::Scheduled
        );
    }

    #[test]
    fn stale_and_duplicate_bases_are_ignored() {
        let committed = at(Status::Committed, "r", "s");
        let auto = TransitionMode::Automatic;
        assert_eq!(
            reconcile(&committed, 5, basis(0, 3, 5), auto).0,
            Outcome::IgnoredStale
        );
        assert_eq!(
            reconcile(&committed, 5, basis(0, 3, 4), auto).0,
            Outcome::IgnoredStale
        );
    }

    #[test]
    fn hours_coming_back_reopen_a_done_item() {
        let auto = TransitionMode::Automatic;
        assert_eq!(
            reconcile(&at(Status::Done, "r", "s"), 1, basis(1, 3, 2), auto)
                .1
                .status,
            Status::Committed
        );
        assert_eq!(
            reconcile(&at(Status::Done, "r", ""), 1, basis(1, 3, 2), auto)
                .1
                .status,
            Status::Scheduled
        );
        assert_eq!(
            reconcile(&at(Status::Done, "", ""), 1, basis(1, 3, 2), auto)
                .1
                .status,
            Status::Planned
        );
    }

    #[test]
    fn hours_left_never_change_an_item_that_is_not_done_or_awaiting() {
        // store::advance_revision_if_nothing_changes settles these in one statement.
        for status in [
            Status::Planned,
            Status::Scheduled,
            Status::Committed,
            Status::Removed,
        ] {
            for mode in [TransitionMode::Automatic, TransitionMode::Manual] {
                for count in [0, 1, 12] {
                    let (outcome, _) =
                        reconcile(&at(status, "r", "s"), 0, basis(1, count, 1), mode);
                    assert_eq!(outcome, Outcome::Unchanged, "{status:?} {mode:?} {count}");
                }
            }
        }
    }

    #[test]
    fn manual_mode_flags_instead_of_finishing() {
        let manual = TransitionMode::Manual;
        let (outcome, after) =
            reconcile(&at(Status::Committed, "r", "s"), 0, basis(0, 2, 1), manual);
        assert_eq!(
            (outcome, after.status, after.awaiting_acceptance),
            (Outcome::Changed, Status::Committed, true)
        );
        let (_, reopened) = reconcile(&after, 1, basis(3, 2, 2), manual);
        assert!(!reopened.awaiting_acceptance);
        assert_eq!(
            mark_done(&after, basis(0, 2, 1)).unwrap().status,
            Status::Done
        );
    }

    #[test]
    fn a_person_accepts_only_what_has_no_hours_left() {
        let committed = at(Status::Committed, "r", "s");
        let error = mark_done(&committed, basis(5, 2, 7)).unwrap_err();
        assert_eq!(error.code(), tonic::Code::FailedPrecondition);
        assert!(
            error.to_string().contains("5 hours remain")
                && error.to_string().contains("revision 7"),
            "{error}"
        );
        // No tasks, nothing left: accepted in either mode.
        assert_eq!(
            mark_done(&committed, basis(0, 0, 0)).unwrap().status,
            Status::Done
        );
    }

    #[test]
    fn committing_a_finished_item_settles_it_at_once() {
        let committed = commit(&at(Status::Scheduled, "r", ""), "s").unwrap();
        let finished = basis(0, 3, 4);
        let auto = settle(&committed, finished, TransitionMode::Automatic);
        assert_eq!(auto.status, Status::Done);
        let manual = settle(&committed, finished, TransitionMode::Manual);
        assert_eq!(
            (manual.status, manual.awaiting_acceptance),
            (Status::Committed, true)
        );
        // Switching MANUAL -> AUTOMATIC releases the awaiting item; back, nothing moves.
        assert_eq!(
            settle(&manual, finished, TransitionMode::Automatic).status,
            Status::Done
        );
        assert_eq!(settle(&auto, finished, TransitionMode::Manual), auto);
        assert!(contradicts(&committed, finished, TransitionMode::Automatic));
        assert!(!contradicts(&auto, finished, TransitionMode::Automatic));
    }

    #[test]
    fn priority_is_a_per_item_ratio() {
        let p = BusinessPriority {
            benefit: 8,
            penalty: 4,
            cost: 2,
            risk: 1,
        };
        assert!((priority_score(Some(&p)) - 4.0).abs() < 1e-9);
        assert_eq!(priority_score(None), 0.0);
        assert_eq!(business_priority("business_priority", p).unwrap(), p);
        let error = business_priority("business_priority", BusinessPriority { benefit: 0, ..p })
            .unwrap_err();
        assert!(
            error.to_string().contains("business_priority.benefit"),
            "{error}"
        );
        assert!(
            business_priority("business_priority", BusinessPriority { risk: 10, ..p }).is_err()
        );
    }
}

/// Model-based test of the status machine: random sequences of every operation, task
/// bases and mode switches against the rules the product promises, which hold after every
/// step whatever came before. Commands settle the item as `commands.rs` does (against the
/// last basis and the product's mode), so the model is the service's, minus I/O.
#[cfg(test)]
mod model {
    use super::*;
    use proptest::prelude::*;

    /// One thing that can happen to an item.
    #[derive(Debug, Clone)]
    enum Step {
        Schedule(u8),
        Unschedule,
        Commit(u8),
        Uncommit,
        Remove,
        MarkDone,
        SwitchMode(TransitionMode),
        Basis {
            hours: i64,
            count: i64,
            revision: i64,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u8..3).prop_map(Step::Schedule),
            Just(Step::Unschedule),
            (0u8..3).prop_map(Step::Commit),
            Just(Step::Uncommit),
            Just(Step::Remove),
            Just(Step::MarkDone),
            prop_oneof![
                Just(TransitionMode::Automatic),
                Just(TransitionMode::Manual)
            ]
            .prop_map(Step::SwitchMode),
            (0i64..3, 0i64..3, 0i64..12).prop_map(|(hours, count, revision)| Step::Basis {
                hours,
                count,
                revision
            }),
        ]
    }

    /// What every placement the machine can reach satisfies.
    fn assert_consistent(p: &Placement) {
        match p.status {
            Status::Planned => assert!(p.release_id.is_empty() && p.sprint_id.is_empty(), "{p:?}"),
            Status::Scheduled => {
                assert!(!p.release_id.is_empty() && p.sprint_id.is_empty(), "{p:?}")
            }
            Status::Committed | Status::Done => {
                assert!(!p.release_id.is_empty() && !p.sprint_id.is_empty(), "{p:?}")
            }
            Status::Removed => {}
        }
        assert!(
            !p.awaiting_acceptance || p.status == Status::Committed,
            "only a committed item awaits acceptance: {p:?}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn no_sequence_leaves_a_status_that_contradicts_hours_and_mode(steps in prop::collection::vec(step(), 1..40)) {
            let mut p = Placement::planned();
            let mut tasks = TaskBasis::default();
            let mut mode = TransitionMode::Automatic;
            for step in steps {
                let before = p.clone();
                let command = |rule: AppResult<Placement>| rule.map(|after| settle(&after, tasks, mode));
                let result = match &step {
                    Step::Schedule(r) => command(schedule(&p, &format!("release-{r}"))),
                    Step::Unschedule => command(unschedule(&p)),
                    Step::Commit(s) => command(commit(&p, &format!("sprint-{s}"))),
                    Step::Uncommit => command(uncommit(&p)),
                    Step::Remove => command(remove(&p)),
                    Step::MarkDone => command(mark_done(&p, tasks)),
                    Step::SwitchMode(to) => {
                        mode = *to;
                        Ok(settle(&p, tasks, mode))
                    }
                    Step::Basis { hours, count, revision } => {
                        let basis = TaskBasis { hours: *hours, count: *count, revision: *revision };
                        let (outcome, after) = reconcile(&p, tasks.revision, basis, mode);
                        if *revision <= tasks.revision {
                            // Stale or duplicate: nothing moves.
                            prop_assert_eq!(outcome, Outcome::IgnoredStale);
                            prop_assert_eq!(&after, &p);
                        } else {
                            tasks = basis;
                            prop_assert_eq!(outcome == Outcome::Changed, after != p);
                            let finished = *count > 0 && *hours == 0;
                            // Task hours move an item only between COMMITTED and DONE
                            // (and flag acceptance in MANUAL mode), never anything else.
                            match (p.status, after.status) {
                                (from, to) if from == to => {}
                                (Status::Committed, Status::Done) => prop_assert!(finished && mode == TransitionMode::Automatic),
                                (Status::Done, Status::Committed) => prop_assert!(*hours > 0),
                                (from, to) => prop_assert!(false, "a basis moved {:?} to {:?}", from, to),
                            }
                        }
                        Ok(after)
                    }
                };
                match result {
                    Ok(after) => p = after,
                    // A refused step changes nothing (the caller keeps `before`).
                    Err(error) => {
                        prop_assert_eq!(error.code(), tonic::Code::FailedPrecondition, "{:?}", step);
                        prop_assert_eq!(&p, &before);
                    }
                }
                assert_consistent(&p);
                prop_assert!(!contradicts(&p, tasks, mode), "{:?} contradicts {:?} in {:?} after {:?}", p, tasks, mode, step);
                // REMOVED is final: no command brings an item back.
                if before.status == Status::Removed {
                    prop_assert_eq!(p.status, Status::Removed);
                }
                // DONE is left only by discovered work (a basis with hours).
                if before.status == Status::Done && p.status != Status::Done {
                    prop_assert!(matches!(step, Step::Basis { hours, .. } if hours > 0), "{:?}", step);
                }
            }
        }
    }
}
