//! Group commit of estimates: the hot write path of the whole system (docs/design.md §3: every
//! estimate changes a task, its log, its item's totals and appends an event).
//!
//! Estimates go through a [`GroupCommit`]: whatever estimates are waiting (up to
//! [`MAX_BATCH`]) are applied together. The tasks, their logs and their items' totals
//! are read in one query, the domain rules run in memory in arrival order, and the
//! tasks, the log entries, the totals and the events are written all or nothing with
//! guards: every task must still be at the version read and every totals row at the
//! revision read, or nothing is written and the batch starts over from a fresh read
//! (`guarded_writes`). On PostgreSQL the write is one statement, so a batch costs two
//! round trips whatever its size; no lock is held between them.
//!
//! Every estimate still gets exactly the outcome it would get alone: its own validation
//! errors (not found, stale `expected_version`), its own events, and the totals right
//! after it (an estimate later in the batch sees the earlier ones, as if they had
//! committed first). A database failure fails every estimate of the batch, none of which
//! was acknowledged.

use std::collections::{BTreeMap, HashMap};

use agilepm_platform::domain::error::{AppError, AppResult};
use agilepm_platform::domain::team_zone::TeamZone;
use agilepm_platform::domain::time::now_micros;
use agilepm_platform::storage::db::Db;
use agilepm_platform::storage::group_commit::{BatchWrite, GroupCommit};
use agilepm_platform::storage::guarded_writes;
use agilepm_platform::storage::optimistic::check_version;
use agilepm_platform::storage::outbox::NewEvent;
use chrono::NaiveDate;

use crate::domain::{self, LogEntry, Status, Task, Totals};
use crate::events::{self, About};
use crate::store::{self, LogWrite, TotalsWrite};

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
    /// The day estimated; `None` for the team's today (in its zone, read with the batch).
    pub day: Option<NaiveDate>,
    /// Hours remaining that day.
    pub hours: i32,
    /// The caller's `expected_version`, if any.
    pub expected_version: Option<i64>,
    /// Who gave it (the writer runs in another task, so it travels with the estimate).
    pub actor: String,
    /// The request's `traceparent`, for the same reason.
    pub trace_parent: String,
    /// Whether the response carries the task's whole estimation log (the FULL view).
    pub with_log: bool,
}

/// What an estimate did: the task after it, its log if asked for, and its item's totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Estimated {
    /// The task right after this estimate.
    pub task: Task,
    /// Its whole estimation log, oldest day first, if the estimate asked for it.
    pub log: Option<Vec<LogEntry>>,
    /// The item's totals right after this estimate.
    pub totals: Totals,
}

/// The estimate writer: a handle on the one task applying estimate batches.
pub type EstimateWriter = GroupCommit<EstimateBatch>;

/// Starts the estimate writer on `db`.
pub fn start_writer(db: Db) -> EstimateWriter {
    GroupCommit::start(EstimateBatch::new(db), MAX_BATCH)
}

/// Applies batches of estimates to the task service's database.
pub struct EstimateBatch {
    db: Db,
}

impl EstimateBatch {
    /// Batches applied to `db` (the writer's, or a test's that compares batch sizes).
    pub fn new(db: Db) -> EstimateBatch {
        EstimateBatch { db }
    }
}

impl BatchWrite for EstimateBatch {
    const NAME: &'static str = "task.estimate";

    type Request = Estimate;
    type Response = Estimated;

    async fn apply(&self, estimates: &[Estimate]) -> AppResult<Vec<AppResult<Estimated>>> {
        apply(&self.db, estimates).await
    }
}

/// A task as the batch has changed it so far.
struct Working {
    row: Task,
    /// Its log entries for the batch's days, or its whole log if an estimate of the
    /// batch asked for it; in day order.
    log: Vec<LogEntry>,
    read_version: i64,
    changed: bool,
}

/// What one estimate did, before the totals are known.
struct Applied {
    task: Task,
    log: Option<Vec<LogEntry>>,
    /// The day it was for (an undated estimate's is its team's today).
    day: NaiveDate,
    backlog_item_id: String,
    /// Hours the item's total moved by (`None`: the total did not change).
    hours_delta: Option<i64>,
    /// Status before and after, when it changed.
    status_change: Option<(Status, Status)>,
    /// Whether anything was written (no event otherwise).
    wrote: bool,
}

/// One batch: read, decide in memory, write with guards. `Err` only for failures of the
/// whole batch; a guard that failed (a task or totals row changed since the read) is
/// `Aborted`, which the group commit retries with a fresh read.
async fn apply(db: &Db, estimates: &[Estimate]) -> AppResult<Vec<AppResult<Estimated>>> {
    // Only the log entries of the days estimated are read (an estimate's cost must not
    // grow with its task's age), and whole logs only for the estimates that asked.
    let mut ids: Vec<&str> = estimates.iter().map(|e| e.task_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let now = now_micros();
    let mut days: Vec<NaiveDate> = estimates.iter().filter_map(|e| e.day).collect();
    if estimates.iter().any(|e| e.day.is_none()) {
        // An undated estimate is for its team's today, which is UTC's yesterday, today or
        // tomorrow (zones span UTC-12 to UTC+14): read those days' entries, and decide
        // which once the zones are read with the tasks.
        let utc_today = TeamZone::UTC.day_of(now);
        days.extend(
            [utc_today.pred_opt(), Some(utc_today), utc_today.succ_opt()]
                .into_iter()
                .flatten(),
        );
    }
    days.sort_unstable();
    days.dedup();
    let mut whole_logs: Vec<&str> = estimates
        .iter()
        .filter(|e| e.with_log)
        .map(|e| e.task_id.as_str())
        .collect();
    whole_logs.sort_unstable();
    whole_logs.dedup();
    let read = store::read_for_estimates(db, &ids, &days, &whole_logs).await?;
    let mut tasks: HashMap<String, Working> = read
        .tasks
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

    // Last write per (task, day) wins, as it would have committed last.
    let mut log_writes: BTreeMap<(String, NaiveDate), (String, i32, &String)> = BTreeMap::new();
    let applied: Vec<AppResult<Applied>> = estimates
        .iter()
        .map(|estimate| {
            let what = format!("task {}", estimate.task_id);
            let task = tasks
                .get_mut(&estimate.task_id)
                .filter(|t| t.row.tenant_id == estimate.tenant)
                .ok_or_else(|| AppError::not_found(&what))?;
            let zone = read
                .zones
                .get(&estimate.tenant)
                .copied()
                .unwrap_or_default();
            let today = zone.day_of(now);
            let day = estimate.day.unwrap_or(today);
            domain::estimate_date("date", day, task.row.defined_on(zone), today, zone)?;
            check_version(&what, estimate.expected_version, task.row.version)?;
            let before = task.row.clone();
            let logged = task
                .log
                .iter()
                .find(|entry| entry.day == day)
                .map(|entry| entry.hours);
            let effect = domain::estimate(before.progress(), estimate.hours, day, logged);
            let mut after = before.with_progress(effect.after);
            let wrote = effect.writes_log || after != before;
            if wrote {
                after.version = before.version + 1;
                after.update_time_us = now;
                task.changed = true;
                if effect.writes_log {
                    record(
                        &mut task.log,
                        LogEntry {
                            day,
                            hours: estimate.hours,
                            record_time_us: now,
                            estimated_by: estimate.actor.clone(),
                        },
                    );
                    log_writes.insert(
                        (before.id.clone(), day),
                        (
                            before.backlog_item_id.clone(),
                            estimate.hours,
                            &estimate.actor,
                        ),
                    );
                }
                task.row = after.clone();
            }
            Ok(Applied {
                task: after.clone(),
                log: estimate.with_log.then(|| task.log.clone()),
                day,
                backlog_item_id: after.backlog_item_id.clone(),
                hours_delta: (wrote && after.hours != before.hours)
                    .then(|| i64::from(after.hours - before.hours)),
                status_change: (after.status != before.status)
                    .then_some((before.status, after.status)),
                wrote,
            })
        })
        .collect();

    // Each estimate gets its item's totals right after it, as if it had committed alone;
    // an item without a totals row starts from zeros, like the upsert that creates one.
    let read_revisions: HashMap<String, i64> = read
        .totals
        .iter()
        .map(|(item, totals)| (item.clone(), totals.revision))
        .collect();
    let mut running = read.totals;
    let mut moved: BTreeMap<String, &str> = BTreeMap::new();
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
            .entry(applied.backlog_item_id.clone())
            .or_insert_with(|| Totals {
                backlog_item_id: applied.backlog_item_id.clone(),
                ..Default::default()
            });
        if let Some(delta) = applied.hours_delta {
            item_totals.hours_remaining += delta;
            item_totals.revision += 1;
            moved.insert(applied.backlog_item_id.clone(), &estimate.tenant);
        }
        if applied.wrote {
            let about = About {
                task_id: &estimate.task_id,
                tenant_id: &estimate.tenant,
                backlog_item_id: &applied.backlog_item_id,
            };
            // The outbox subject borrows from the estimate, which outlives the batch's
            // event list; the item id is copied into the payloads.
            let subject = events::subject(&estimate.task_id, &estimate.tenant);
            let estimated =
                events::hours_estimated(about, applied.day, estimate.hours, item_totals);
            events.push(NewEvent::for_request(
                subject,
                &estimated,
                &estimate.actor,
                &estimate.trace_parent,
            ));
            if let Some((old_status, new_status)) = applied.status_change {
                let status_changed = events::status_changed(about, old_status, new_status);
                events.push(NewEvent::for_request(
                    subject,
                    &status_changed,
                    &estimate.actor,
                    &estimate.trace_parent,
                ));
            }
        }
        outcomes.push(Ok(Estimated {
            task: applied.task,
            log: applied.log,
            totals: item_totals.clone(),
        }));
    }

    let changed: Vec<(&Task, i64)> = tasks
        .values()
        .filter(|t| t.changed)
        .map(|t| (&t.row, t.read_version))
        .collect();
    let log: Vec<LogWrite<'_>> = log_writes
        .iter()
        .map(
            |((task_id, day), (backlog_item_id, hours, actor))| LogWrite {
                task_id,
                backlog_item_id,
                day: *day,
                hours: *hours,
                record_time_us: now,
                estimated_by: actor,
            },
        )
        .collect();
    let totals: Vec<TotalsWrite<'_>> = moved
        .iter()
        .filter_map(|(item, tenant)| {
            let after = running.get(item)?.clone();
            Some(TotalsWrite {
                tenant,
                totals: after,
                read_revision: read_revisions.get(item).copied(),
            })
        })
        .collect();
    let mut writes = Vec::new();
    if !changed.is_empty() {
        writes.push(store::progress_write(&changed));
    }
    if !log.is_empty() {
        writes.push(store::log_write(&log));
    }
    writes.extend(store::totals_writes(&totals));
    guarded_writes::apply(db, &writes, &events).await?;
    Ok(outcomes)
}

/// Puts `entry` into a log kept in day order, replacing that day's entry.
fn record(log: &mut Vec<LogEntry>, entry: LogEntry) {
    match log.binary_search_by_key(&entry.day, |e| e.day) {
        Ok(i) => log[i] = entry,
        Err(i) => log.insert(i, entry),
    }
}
