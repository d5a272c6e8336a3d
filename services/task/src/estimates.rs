//! Group commit of estimates: the hot write path of the whole system (DESIGN.md §3: every
//! estimate changes a task, its log, its item's totals and appends an event).
//!
//! Estimates go through a [`GroupCommit`]: whatever estimates are waiting (up to
//! [`MAX_BATCH`]) are applied in one transaction with one statement per table. The tasks
//! and their logs are read (and on PostgreSQL locked) at once, the domain rules run in
//! memory in arrival order, then the tasks, the log entries, the totals and the events
//! are written and committed together.
//!
//! Every estimate still gets exactly the outcome it would get alone: its own validation
//! errors (not found, stale `expected_version`), its own events, and the totals right
//! after it (an estimate later in the batch sees the earlier ones, as if they had
//! committed first). A database failure fails every estimate of the batch, none of which
//! was acknowledged.

use std::collections::{BTreeMap, HashMap};

use agilepm_platform::db::Db;
use agilepm_platform::error::{AppError, AppResult};
use agilepm_platform::group_commit::{BatchWrite, GroupCommit};
use agilepm_platform::optimistic::check_version;
use agilepm_platform::outbox::{self, NewEvent, Subject};
use agilepm_platform::time::{now_micros, timestamp};
use agilepm_proto::task::v1::{
    BacklogItemTaskTotals, EstimationLogEntry, Task, TaskHoursRemainingEstimated, TaskStatusChanged,
};
use chrono::NaiveDate;

use crate::domain;
use crate::store::{self, LogEntry, LogWrite, TaskRow, TotalsChange};

/// Most estimates applied in one transaction. Bounds a batch's statement sizes and the
/// time a caller waits behind others.
pub const MAX_BATCH: usize = 128;

/// One `EstimateTaskHoursRemaining`, validated.
#[derive(Debug, Clone)]
pub struct Estimate {
    /// The caller's tenant.
    pub tenant: String,
    /// The task.
    pub task_id: String,
    /// The day estimated.
    pub day: NaiveDate,
    /// Hours remaining that day.
    pub hours: i32,
    /// The caller's `expected_version`, if any.
    pub expected_version: Option<i64>,
}

/// What an estimate did: the task after it (with its whole log) and its item's totals.
#[derive(Debug, Clone)]
pub struct Estimated {
    /// The task as the response carries it.
    pub task: Task,
    /// The item's totals right after this estimate.
    pub totals: BacklogItemTaskTotals,
}

/// The estimate writer: a handle on the one task applying estimate batches.
pub type EstimateWriter = GroupCommit<EstimateBatch>;

/// Starts the estimate writer on `db`.
pub fn start_writer(db: Db) -> EstimateWriter {
    GroupCommit::start(EstimateBatch { db }, MAX_BATCH)
}

/// Applies batches of estimates to the task service's database.
pub struct EstimateBatch {
    db: Db,
}

impl BatchWrite for EstimateBatch {
    type Request = Estimate;
    type Response = Estimated;

    async fn apply(&self, estimates: &[Estimate]) -> AppResult<Vec<AppResult<Estimated>>> {
        apply(&self.db, estimates).await
    }
}

/// A task as the batch has changed it so far.
struct Working {
    row: TaskRow,
    log: Vec<LogEntry>,
    read_version: i64,
    changed: bool,
}

/// What one estimate did, before the totals are known.
struct Applied {
    task: Task,
    backlog_item_id: String,
    /// Hours the item's total moved by (`None`: the total did not change).
    hours_delta: Option<i64>,
    /// Status before and after, when it changed.
    status_change: Option<(i32, i32)>,
    /// Whether anything was written (no event otherwise).
    wrote: bool,
}

/// One batch in one transaction. `Err` only for failures of the whole batch.
async fn apply(db: &Db, estimates: &[Estimate]) -> AppResult<Vec<AppResult<Estimated>>> {
    let mut uow = db.begin().await?;
    let mut ids: Vec<&str> = estimates.iter().map(|e| e.task_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut tasks: HashMap<String, Working> = store::lock_with_logs(&mut uow, &ids)
        .await?
        .into_iter()
        .map(|(id, (row, log))| {
            let read_version = row.version;
            let working = Working {
                row,
                log,
                read_version,
                changed: false,
            };
            (id, working)
        })
        .collect();

    let now = now_micros();
    // Last write per (task, day) wins, as it would have committed last.
    let mut log_writes: BTreeMap<(String, NaiveDate), (String, i32)> = BTreeMap::new();
    let applied: Vec<AppResult<Applied>> = estimates
        .iter()
        .map(|estimate| {
            let what = format!("task {}", estimate.task_id);
            let task = tasks
                .get_mut(&estimate.task_id)
                .filter(|t| t.row.tenant_id == estimate.tenant)
                .ok_or_else(|| AppError::not_found(&what))?;
            check_version(&what, estimate.expected_version, task.row.version)?;
            let before = task.row.clone();
            let logged = task
                .log
                .iter()
                .find(|(day, _, _)| *day == estimate.day)
                .map(|(_, hours, _)| *hours);
            let effect = domain::estimate(before.progress(), estimate.hours, estimate.day, logged);
            let mut after = before.with_progress(effect.after);
            let wrote = effect.writes_log || after != before;
            if wrote {
                after.version = before.version + 1;
                after.update_time_us = now;
                task.changed = true;
                if effect.writes_log {
                    record(&mut task.log, estimate.day, estimate.hours, now);
                    log_writes.insert(
                        (before.id.clone(), estimate.day),
                        (before.backlog_item_id.clone(), estimate.hours),
                    );
                }
                task.row = after.clone();
            }
            Ok(Applied {
                task: crate::api::task_message(after.clone(), log_message(&task.log)),
                backlog_item_id: after.backlog_item_id.clone(),
                hours_delta: (wrote && after.hours != before.hours)
                    .then(|| i64::from(after.hours - before.hours)),
                status_change: (after.status != before.status)
                    .then_some((before.status as i32, after.status as i32)),
                wrote,
            })
        })
        .collect();

    let changed: Vec<(&TaskRow, i64)> = tasks
        .values()
        .filter(|t| t.changed)
        .map(|t| (&t.row, t.read_version))
        .collect();
    let written = store::update_progress_all(&mut uow, &changed).await?;
    if written != changed.len() as u64 {
        // The rows are locked (PostgreSQL) or the writer is alone (SQLite), so this is a
        // broken invariant, not a race: fail the batch rather than write half of it.
        return Err(AppError::Internal(format!(
            "estimate batch wrote {written} of {} tasks",
            changed.len()
        )));
    }
    let writes: Vec<LogWrite<'_>> = log_writes
        .iter()
        .map(|((task_id, day), (backlog_item_id, hours))| LogWrite {
            task_id,
            backlog_item_id,
            day: *day,
            hours: *hours,
            record_time_us: now,
        })
        .collect();
    store::log_estimates(&mut uow, &writes).await?;

    let totals = item_totals(&mut uow, estimates, &applied).await?;
    let mut running = totals_before_batch(&totals, &applied);
    let mut events = Vec::new();
    let mut outcomes = Vec::with_capacity(applied.len());
    for (estimate, applied) in estimates.iter().zip(applied) {
        let applied = match applied {
            Ok(applied) => applied,
            Err(error) => {
                outcomes.push(Err(error));
                continue;
            }
        };
        let item_totals = running
            .get_mut(&applied.backlog_item_id)
            .ok_or_else(|| AppError::Internal("totals of a batch item missing".into()))?;
        if let Some(delta) = applied.hours_delta {
            item_totals.hours_remaining += delta;
            item_totals.revision += 1;
        }
        if applied.wrote {
            let subject = Subject {
                aggregate_type: "Task",
                aggregate_id: &estimate.task_id,
                tenant_id: &estimate.tenant,
            };
            let estimated = TaskHoursRemainingEstimated {
                task_id: estimate.task_id.clone(),
                tenant_id: estimate.tenant.clone(),
                backlog_item_id: applied.backlog_item_id.clone(),
                hours_remaining: estimate.hours,
                date: estimate.day.format("%Y-%m-%d").to_string(),
                totals: Some(item_totals.clone()),
            };
            events.push(NewEvent::of(subject, &estimated));
            if let Some((old_status, new_status)) = applied.status_change {
                let status_changed = TaskStatusChanged {
                    task_id: estimate.task_id.clone(),
                    tenant_id: estimate.tenant.clone(),
                    backlog_item_id: applied.backlog_item_id.clone(),
                    old_status,
                    new_status,
                };
                events.push(NewEvent::of(subject, &status_changed));
            }
        }
        outcomes.push(Ok(Estimated {
            task: applied.task,
            totals: item_totals.clone(),
        }));
    }
    outbox::append_all(&mut uow, &events).await?;
    uow.commit().await?;
    Ok(outcomes)
}

/// Puts `hours` for `day` into a log kept in day order.
fn record(log: &mut Vec<LogEntry>, day: NaiveDate, hours: i32, now: i64) {
    match log.binary_search_by_key(&day, |(d, _, _)| *d) {
        Ok(i) => log[i] = (day, hours, now),
        Err(i) => log.insert(i, (day, hours, now)),
    }
}

fn log_message(log: &[LogEntry]) -> Vec<EstimationLogEntry> {
    log.iter()
        .map(|(day, hours, recorded)| EstimationLogEntry {
            date: day.format("%Y-%m-%d").to_string(),
            hours_remaining: *hours,
            record_time: Some(timestamp(*recorded)),
        })
        .collect()
}

/// The totals after the batch of every item it touched: one upsert for the items whose
/// hours moved, one read for the others.
async fn item_totals(
    uow: &mut agilepm_platform::db::UnitOfWork,
    estimates: &[Estimate],
    applied: &[AppResult<Applied>],
) -> AppResult<HashMap<String, BacklogItemTaskTotals>> {
    // item -> (tenant, hours moved, changes); sorted, so rows are locked in one order.
    let mut moved: BTreeMap<&str, (&str, i64, i64)> = BTreeMap::new();
    let mut untouched: BTreeMap<&str, &str> = BTreeMap::new();
    for (estimate, applied) in estimates.iter().zip(applied) {
        let Ok(applied) = applied else { continue };
        let item = applied.backlog_item_id.as_str();
        match applied.hours_delta {
            Some(delta) => {
                let entry = moved.entry(item).or_insert((&estimate.tenant, 0, 0));
                entry.1 += delta;
                entry.2 += 1;
            }
            None => {
                untouched.insert(item, &estimate.tenant);
            }
        }
    }
    let changes: Vec<TotalsChange<'_>> = moved
        .iter()
        .map(|(item, (tenant, hours, changes))| TotalsChange {
            tenant,
            backlog_item_id: item,
            hours: *hours,
            count: 0,
            changes: *changes,
        })
        .collect();
    let mut totals = store::add_to_totals_all(uow, &changes).await?;
    let unread: Vec<(&str, &str)> = untouched
        .into_iter()
        .filter(|(item, _)| !totals.contains_key(*item))
        .map(|(item, tenant)| (tenant, item))
        .collect();
    totals.extend(store::totals_all(uow.conn(), &unread).await?);
    Ok(totals)
}

/// Each item's totals as they were before the batch, derived from the totals after it by
/// undoing the batch's changes, so each estimate can be given the totals right after it.
fn totals_before_batch(
    after: &HashMap<String, BacklogItemTaskTotals>,
    applied: &[AppResult<Applied>],
) -> HashMap<String, BacklogItemTaskTotals> {
    let mut before = after.clone();
    for applied in applied.iter().flatten() {
        if let (Some(delta), Some(totals)) = (
            applied.hours_delta,
            before.get_mut(&applied.backlog_item_id),
        ) {
            totals.hours_remaining -= delta;
            totals.revision -= 1;
        }
    }
    before
}
