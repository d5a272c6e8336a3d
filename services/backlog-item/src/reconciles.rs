//! Reconciliation under group commit. The coordinator sends many bases at once; those
//! that arrive together are applied together, so one commit (on PostgreSQL one WAL
//! flush) serves them all, including the ones that change an item's status.
//!
//! Within a batch, most bases (mid-sprint, hours left) only move an item's revision
//! guard and are settled by one multi-row statement
//! ([`store::advance_revisions_if_nothing_changes`]). The rest (an item reaching zero
//! hours, a DONE item getting hours back, stale or duplicate bases, unknown items) are
//! read in one query without a lock, run through [`domain::reconcile`] in arrival order,
//! exactly as they would be one transaction at a time, and written with their events as
//! one guarded write (`platform::guarded_writes`: on PostgreSQL one statement), each item
//! guarded by the version it was read at. The status change is on the reconcile lag's
//! path, so its round trips count: read and write, where a locking transaction took
//! `BEGIN`, the locking read, one `UPDATE` per item, the outbox insert and `COMMIT`.

use std::collections::HashMap;

use agilepm_platform::db::Db;
use agilepm_platform::error::{AppError, AppResult};
use agilepm_platform::group_commit::{BatchWrite, GroupCommit};
use agilepm_platform::guarded_writes::{self, GuardedWrite};
use agilepm_platform::outbox::NewEvent;
use agilepm_platform::time::{micros, now_micros, timestamp};
use agilepm_proto::backlog::v1::{BacklogItem, ReconcileOutcome, StatusChangeCause};
use agilepm_proto::common::v1::StatusTransitionMode;

use crate::api::{place, placement, status_changed, subject};
use crate::domain::{self, TaskBasis};
use crate::store::{self, PlacementWrite, RevisionMove};

/// Most bases in one transaction.
const MAX_BATCH: usize = 256;

/// One basis to apply to one item.
#[derive(Debug, Clone)]
pub struct Reconcile {
    /// The caller's tenant.
    pub tenant: String,
    /// The item.
    pub id: String,
    /// The task totals and their revision.
    pub basis: TaskBasis,
    /// How the item's product moves finished items.
    pub mode: StatusTransitionMode,
}

/// A handle on the writer applying bases.
pub type Reconciler = GroupCommit<ReconcileBatch>;

/// Starts the reconcile writer on `db`. Must be called inside the tokio runtime.
pub fn start(db: Db) -> Reconciler {
    GroupCommit::start(ReconcileBatch { db }, MAX_BATCH)
}

/// Applies batches of bases.
pub struct ReconcileBatch {
    db: Db,
}

/// An item of the batch as the bases leave it.
struct Working {
    item: BacklogItem,
    read_version: i64,
    /// Whether a basis moved its guard or changed it (it must be written).
    touched: bool,
}

impl BatchWrite for ReconcileBatch {
    type Request = Reconcile;
    type Response = (BacklogItem, ReconcileOutcome);

    async fn apply(
        &self,
        requests: &[Reconcile],
    ) -> AppResult<Vec<AppResult<(BacklogItem, ReconcileOutcome)>>> {
        // The fast statement: the newest basis with hours left of each item. One
        // statement may change a row only once; any other basis of that item is left to
        // the full path below, where it is stale.
        let mut fast: Vec<RevisionMove<'_>> = Vec::new();
        for request in requests.iter().filter(|r| r.basis.hours > 0) {
            match fast.iter_mut().find(|m| m.id == request.id) {
                Some(m) if m.revision < request.basis.revision => {
                    m.revision = request.basis.revision;
                }
                Some(_) => {}
                None => fast.push(RevisionMove {
                    tenant: &request.tenant,
                    id: &request.id,
                    revision: request.basis.revision,
                }),
            }
        }
        // It commits on its own: in the common batch it settles every basis, and one
        // autocommitted statement is a third of the round trips of a transaction.
        let mut moved = {
            let mut conn = self.db.write_pool().acquire().await?;
            store::advance_revisions_if_nothing_changes(&mut conn, &fast).await?
        };
        let settled: Vec<bool> = requests
            .iter()
            .map(|request| {
                moved.get(&request.id).is_some_and(|item| {
                    item.tenant_id == request.tenant
                        && item.reconciled_task_revision == request.basis.revision
                })
            })
            .collect();

        // The full path, for every basis the statement did not settle.
        let mut ids: Vec<&str> = requests
            .iter()
            .zip(&settled)
            .filter(|(_, settled)| !**settled)
            .map(|(r, _)| r.id.as_str())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        // A read only if some basis needs the full path; in the common batch the
        // statement above settled every one.
        let mut items: HashMap<String, Working> = store::read_all(&self.db, &ids)
            .await?
            .into_iter()
            .map(|item| {
                let working = Working {
                    read_version: item.version,
                    item,
                    touched: false,
                };
                (working.item.id.clone(), working)
            })
            .collect();
        let now = now_micros();
        let mut events = Vec::new();
        let mut outcomes = Vec::with_capacity(requests.len());
        for (request, settled) in requests.iter().zip(settled) {
            if settled {
                // Only one basis of an item can be the one the statement applied.
                if let Some(item) = moved.remove(&request.id) {
                    outcomes.push(Ok((item, ReconcileOutcome::Unchanged)));
                    continue;
                }
            }
            let Some(working) = items
                .get_mut(&request.id)
                .filter(|w| w.item.tenant_id == request.tenant)
            else {
                let what = format!("backlog item {}", request.id);
                outcomes.push(Err(AppError::not_found(&what)));
                continue;
            };
            let before = &working.item;
            let (outcome, placed) = domain::reconcile(
                &placement(before),
                before.reconciled_task_revision,
                request.basis,
                request.mode,
            );
            let after = match outcome {
                ReconcileOutcome::IgnoredStale => before.clone(),
                ReconcileOutcome::Changed => {
                    let after = BacklogItem {
                        reconciled_task_revision: request.basis.revision,
                        version: before.version + 1,
                        update_time: Some(timestamp(now)),
                        ..place(before, &placed)
                    };
                    let cause = StatusChangeCause::TaskHours;
                    let event = status_changed(before, &after, cause, Some(request.basis));
                    events.push((after.clone(), event));
                    after
                }
                _ => BacklogItem {
                    reconciled_task_revision: request.basis.revision,
                    ..before.clone()
                },
            };
            working.touched |= outcome != ReconcileOutcome::IgnoredStale;
            working.item = after.clone();
            outcomes.push(Ok((after, outcome)));
        }

        // Every touched item and every event in one guarded write: an item some other
        // writer changed since the read fails it as a whole, and the group commit runs the
        // batch again from a fresh read.
        let placements: Vec<PlacementWrite<'_>> = items
            .values()
            .filter(|w| w.touched)
            .map(|w| PlacementWrite {
                item: &w.item,
                read_version: w.read_version,
                update_time_us: w.item.update_time.as_ref().map_or(now, micros),
            })
            .collect();
        let writes: Vec<GuardedWrite<'_>> = if placements.is_empty() {
            Vec::new()
        } else {
            vec![store::placements_write(&placements)]
        };
        let events: Vec<NewEvent<'_>> = events
            .iter()
            .map(|(item, event)| NewEvent::of(subject(item), event))
            .collect();
        guarded_writes::apply(&self.db, &writes, &events).await?;
        Ok(outcomes)
    }
}
