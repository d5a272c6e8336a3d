//! Reconciliation under group commit. The coordinator sends many bases at once (one
//! `ReconcileBacklogItemStatuses` call per batch of the task feed); those that arrive
//! together are applied together, so a few statements serve them all.
//!
//! Within a batch, most bases (mid-sprint, hours left) only move an item's revision
//! guard and are settled by one multi-row statement
//! ([`store::advance_revisions_if_nothing_changes`]). An item with a basis at zero hours
//! may change status: its bases go straight to the full path, at the same time as the
//! fast statement (the two touch different items). The full path reads its items in one
//! query without a lock, runs the bases through [`domain::reconcile`] in arrival order,
//! exactly as they would be one transaction at a time, and writes them with their events
//! as one guarded write (`platform::storage::guarded_writes`: on PostgreSQL one statement), each
//! item guarded by the version it was read at. Bases the fast statement did not settle
//! (a DONE item getting hours back, stale or duplicate bases, unknown items) take the
//! full path after it. The status change is on the reconcile lag's path, so its round
//! trips count: read and write, not waiting behind the fast statement, where a locking
//! transaction took `BEGIN`, the locking read, one `UPDATE` per item, the outbox insert
//! and `COMMIT`.

use std::collections::{HashMap, HashSet};

use agilepm_platform::domain::error::{AppError, AppResult};
use agilepm_platform::domain::time::now_micros;
use agilepm_platform::storage::db::Db;
use agilepm_platform::storage::group_commit::{BatchWrite, GroupCommit};
use agilepm_platform::storage::guarded_writes::{self, GuardedWrite};
use agilepm_platform::storage::outbox::NewEvent;
use agilepm_proto::backlog::v1::StatusChangeCause;

use crate::domain::{self, BacklogItem, Outcome, TaskBasis, TransitionMode};
use crate::events::{status_changed, subject};
use crate::store::{self, ModeRead, PlacementWrite, RevisionMove};

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
    /// Who asked (the coordinator's identity), recorded on the events.
    pub actor: String,
    /// The request's `traceparent`, recorded on the events.
    pub trace_parent: String,
}

/// A handle on the writer applying bases.
pub type Reconciler = GroupCommit<ReconcileBatch>;

/// Starts the reconcile writer on `db`. Must be called inside the tokio runtime.
pub fn start(db: Db) -> Reconciler {
    GroupCommit::start(ReconcileBatch::new(db), MAX_BATCH)
}

/// Applies batches of bases.
pub struct ReconcileBatch {
    db: Db,
}

impl ReconcileBatch {
    /// Batches applied to `db` (the writer's, or a test's that compares batch sizes).
    pub fn new(db: Db) -> ReconcileBatch {
        ReconcileBatch { db }
    }
}

/// An item of the batch as the bases leave it.
struct Working {
    item: BacklogItem,
    read_version: i64,
    /// How the item's product moves finished items, as the planning service recorded it
    /// (read with the item, so a mode switch acknowledged before this read is honoured;
    /// none recorded: AUTOMATIC).
    mode: Option<TransitionMode>,
    /// Whether a basis moved its guard or changed it (it must be written).
    touched: bool,
}

/// A basis and its place in the batch (outcomes are returned in request order).
type Indexed<'a> = (usize, &'a Reconcile);

/// Outcomes of some of a batch's bases, by their place in the batch.
type Outcomes = Vec<(usize, AppResult<(BacklogItem, Outcome)>)>;

impl ReconcileBatch {
    /// The fast statement: moves the revision guard of every item whose bases all have
    /// hours left (its newest basis; one statement may change a row only once, so any
    /// other basis of that item is stale). Returns the outcomes it settled and the bases
    /// it did not (DONE or awaiting items, stale or duplicate bases, unknown items).
    ///
    /// So an older basis that arrived in the same batch as a newer one of the same item
    /// is answered IGNORED_STALE with the item as the batch leaves it, where one batch
    /// per basis would have answered it UNCHANGED (advancing the guard to it first) with
    /// the item as of then. Nothing else differs: neither changes status or writes an
    /// event, and the guard ends at the newest revision either way
    /// (`tests/e2e/batching.rs` checks this against one-by-one application).
    async fn fast_path<'a>(
        &self,
        bases: &[Indexed<'a>],
    ) -> AppResult<(Outcomes, Vec<Indexed<'a>>)> {
        let mut moves: Vec<RevisionMove<'_>> = Vec::new();
        for (_, request) in bases {
            match moves.iter_mut().find(|m| m.id == request.id) {
                Some(m) if m.basis.revision < request.basis.revision => {
                    m.basis = request.basis;
                }
                Some(_) => {}
                None => moves.push(RevisionMove {
                    tenant: &request.tenant,
                    id: &request.id,
                    basis: request.basis,
                }),
            }
        }
        // One autocommitted statement: a third of the round trips of a transaction.
        let mut moved = store::advance_revisions_if_nothing_changes(&self.db, &moves).await?;
        let mut settled = Vec::new();
        let mut rest = Vec::new();
        for &(i, request) in bases {
            let applied = moved.get(&request.id).is_some_and(|item| {
                item.tenant_id == request.tenant && item.tasks.revision == request.basis.revision
            });
            // Only one basis of an item can be the one the statement applied; the item
            // stays in `moved` until that basis comes, whatever order the bases are in.
            match applied.then(|| moved.remove(&request.id)).flatten() {
                Some(item) => settled.push((i, Ok((item, Outcome::Unchanged)))),
                None => rest.push((i, request)),
            }
        }
        Ok((settled, rest))
    }

    /// The full path: reads the bases' items without a lock, runs the bases through
    /// [`domain::reconcile`] in arrival order, exactly as one transaction at a time
    /// would, and writes every touched item with its events as one guarded write, each
    /// item guarded by the version it was read at. An item some other writer changed
    /// since the read fails the write as a whole (`Aborted`), and the group commit runs
    /// the batch again from a fresh read.
    async fn full_path(&self, bases: &[Indexed<'_>]) -> AppResult<Outcomes> {
        if bases.is_empty() {
            return Ok(Vec::new());
        }
        let mut ids: Vec<&str> = bases.iter().map(|(_, r)| r.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut items: HashMap<String, Working> = store::read_all_with_modes(&self.db, &ids)
            .await?
            .into_iter()
            .map(|(item, mode)| {
                let working = Working {
                    read_version: item.version,
                    item,
                    mode,
                    touched: false,
                };
                (working.item.id.clone(), working)
            })
            .collect();
        let now = now_micros();
        let mut events = Vec::new();
        let mut outcomes = Vec::with_capacity(bases.len());
        // The recorded modes a decision depended on: the write re-checks them.
        let mut modes_read: HashSet<ModeRead> = HashSet::new();
        for &(i, request) in bases {
            let Some(working) = items
                .get_mut(&request.id)
                .filter(|w| w.item.tenant_id == request.tenant)
            else {
                let what = format!("backlog item {}", request.id);
                outcomes.push((i, Err(AppError::not_found(&what))));
                continue;
            };
            let before = &working.item;
            let mode = working.mode.unwrap_or(TransitionMode::Automatic);
            let (outcome, placement) = domain::reconcile(
                &before.placement,
                before.tasks.revision,
                request.basis,
                mode,
            );
            if let Some(mode) = working.mode
                && outcome != Outcome::IgnoredStale
                && domain::settle(&before.placement, request.basis, TransitionMode::Automatic)
                    != domain::settle(&before.placement, request.basis, TransitionMode::Manual)
            {
                modes_read.insert(ModeRead {
                    tenant: before.tenant_id.clone(),
                    product_id: before.product_id.clone(),
                    mode,
                });
            }
            let after = match outcome {
                Outcome::IgnoredStale => before.clone(),
                Outcome::Changed => {
                    let after = BacklogItem {
                        placement,
                        tasks: request.basis,
                        version: before.version + 1,
                        update_time_us: now,
                        ..before.clone()
                    };
                    let cause = StatusChangeCause::TaskHours;
                    let event = status_changed(before, &after, cause, Some(request.basis));
                    events.push((after.clone(), event, request));
                    after
                }
                _ => BacklogItem {
                    tasks: request.basis,
                    ..before.clone()
                },
            };
            working.touched |= outcome != Outcome::IgnoredStale;
            working.item = after.clone();
            outcomes.push((i, Ok((after, outcome))));
        }

        let placements: Vec<PlacementWrite<'_>> = items
            .values()
            .filter(|w| w.touched)
            .map(|w| PlacementWrite {
                item: &w.item,
                read_version: w.read_version,
            })
            .collect();
        let modes_read: Vec<ModeRead> = modes_read.into_iter().collect();
        let mut writes: Vec<GuardedWrite<'_>> = Vec::new();
        if !placements.is_empty() {
            writes.push(store::placements_write(&placements));
        }
        if !modes_read.is_empty() {
            // A mode switch between the read and this write would leave a decision taken
            // on the old mode (an item flagged in a product now AUTOMATIC): refused, and
            // the batch is decided again.
            writes.push(store::modes_unchanged(&modes_read));
        }
        let events: Vec<NewEvent<'_>> = events
            .iter()
            .map(|(item, event, request)| {
                NewEvent::for_request(subject(item), event, &request.actor, &request.trace_parent)
            })
            .collect();
        guarded_writes::apply(&self.db, &writes, &events).await?;
        Ok(outcomes)
    }
}

impl BatchWrite for ReconcileBatch {
    const NAME: &'static str = "backlog_item.reconcile";

    type Request = Reconcile;
    type Response = (BacklogItem, Outcome);

    async fn apply(
        &self,
        requests: &[Reconcile],
    ) -> AppResult<Vec<AppResult<(BacklogItem, Outcome)>>> {
        // An item with a basis at zero hours may change status: all its bases take the
        // full path at once, beside the fast statement for the others (disjoint items,
        // so neither waits for the other; on PostgreSQL their commits can share a WAL
        // flush). The status change is what the reconcile lag waits for.
        let zero: HashSet<&str> = requests
            .iter()
            .filter(|r| r.basis.hours <= 0)
            .map(|r| r.id.as_str())
            .collect();
        let (changing, steady): (Vec<Indexed<'_>>, Vec<Indexed<'_>>) = requests
            .iter()
            .enumerate()
            .partition(|(_, r)| zero.contains(r.id.as_str()));
        let (fast, full) = tokio::join!(self.fast_path(&steady), self.full_path(&changing));
        let (mut outcomes, rest) = fast?;
        outcomes.extend(full?);
        // What the fast statement did not settle (rare mid-sprint): the full path too.
        outcomes.extend(self.full_path(&rest).await?);
        outcomes.sort_unstable_by_key(|(i, _)| *i);
        Ok(outcomes.into_iter().map(|(_, outcome)| outcome).collect())
    }
}
