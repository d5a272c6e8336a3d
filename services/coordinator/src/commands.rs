//! The coordinator's unit of work, and the heart of the consistency design (DESIGN.md §3): task events in, backlog item
//! status out, exactly once in effect.
//!
//! For each batch from the task feed the reconciler collapses the events per backlog
//! item (twelve estimates of one item become one reconcile), takes the newest
//! `(sum, count, revision)` the events carry (each task event carries the item's totals
//! as committed with it, so no read of the task service is needed), and hands the
//! batch's bases to the backlog-item service in one call per tenant
//! (`ReconcileBacklogItemStatuses`; one call per item cost the two services a third of
//! their CPU in the benchmark), which applies each only if its revision is newer than the
//! last one applied. Replays, duplicates and reordering are therefore harmless; items
//! that fail transiently are retried alone, and the feed position is saved (by the
//! follower) only after every item of the batch succeeded.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agilepm_platform::domain::error::{AppResult, is_transient};
use agilepm_platform::domain::time::{micros, now_micros};
use agilepm_platform::events::follower::{BatchHandler, FollowOptions, backoff};
use agilepm_platform::storage::db::Db;
use agilepm_platform::wire::auth::act_for;
use agilepm_platform::wire::client::PeerChannel;
use agilepm_proto::backlog::v1::backlog_item_service_client::BacklogItemServiceClient;
use agilepm_proto::backlog::v1::{
    ReconcileBacklogItemStatusRequest, ReconcileBacklogItemStatusesRequest, ReconcileOutcome,
    reconcile_result,
};
use agilepm_proto::events::v1::{Event, Heartbeat};
use agilepm_proto::task::v1::GetBacklogItemTaskTotalsRequest;
use agilepm_proto::task::v1::task_service_client::TaskServiceClient;
use futures::StreamExt as _;
use tonic::{Code, Status};

use crate::domain::{self, ItemWork, PoisonEvent, Totals};
use crate::progress::Progress;
use crate::{events, mapping, store};

/// Deadline of each call to a peer.
const CALL_DEADLINE: Duration = Duration::from_secs(2);
/// Most bases in one `ReconcileBacklogItemStatuses` call (the service takes up to 1000).
const BASES_PER_CALL: usize = 256;

/// Tuning of the reconciler.
#[derive(Debug, Clone)]
pub struct ReconcilerOptions {
    /// Attempts per item before its events are declared failed for this batch.
    pub attempts: u32,
    /// Backoff between attempts.
    pub backoff: FollowOptions,
    /// Items whose bases (totals) are resolved at once.
    pub concurrency: usize,
}

impl Default for ReconcilerOptions {
    fn default() -> Self {
        ReconcilerOptions {
            attempts: 5,
            backoff: FollowOptions {
                min_backoff: Duration::from_millis(20),
                max_backoff: Duration::from_secs(1),
                ..FollowOptions::default()
            },
            concurrency: 64,
        }
    }
}

/// Why an item could not be reconciled.
struct Failure {
    permanent: bool,
    status: Status,
}

/// Reconciles backlog item status from the task feed.
pub struct Reconciler {
    db: Db,
    tasks: TaskServiceClient<PeerChannel>,
    backlog_items: BacklogItemServiceClient<PeerChannel>,
    progress: Arc<Progress>,
    options: ReconcilerOptions,
    poison: KnownEmpty,
}

impl Reconciler {
    /// A reconciler talking to these peers and recording poison events in `db`.
    pub fn new(
        db: Db,
        tasks: TaskServiceClient<PeerChannel>,
        backlog_items: BacklogItemServiceClient<PeerChannel>,
        progress: Arc<Progress>,
        options: ReconcilerOptions,
    ) -> Reconciler {
        Reconciler {
            db,
            tasks,
            backlog_items,
            progress,
            options,
            poison: KnownEmpty::default(),
        }
    }

    /// Another replica may have recorded poison events since this one last read them
    /// (this replica took the task-feed lease again, or replicas share the work on
    /// JetStream): the next batch reads the table.
    pub fn forget_known_poison(&self) {
        self.poison.forget();
    }

    /// The item's totals, read from the task service (for events without totals).
    async fn read_totals(&self, work: &ItemWork) -> Result<Totals, Status> {
        let mut request = act_for(
            &work.tenant,
            GetBacklogItemTaskTotalsRequest {
                backlog_item_id: work.backlog_item_id.clone(),
            },
        );
        request.set_timeout(CALL_DEADLINE);
        let response = self
            .tasks
            .clone()
            .get_backlog_item_task_totals(request)
            .await?;
        Ok(response
            .into_inner()
            .totals
            .as_ref()
            .map(mapping::totals)
            .unwrap_or_default())
    }

    /// The basis to send for one item: its newest totals (read from the task service if
    /// an event came without them). `None` when there is nothing to apply (no task change
    /// has been committed for the item).
    async fn basis_of(
        &self,
        work: &ItemWork,
    ) -> Result<Option<ReconcileBacklogItemStatusRequest>, Status> {
        let totals = match work.totals {
            Some(totals) if !work.read_totals => totals,
            _ => self.read_totals(work).await?,
        };
        if totals.revision == 0 {
            return Ok(None);
        }
        Ok(Some(mapping::basis(&work.backlog_item_id, totals)))
    }

    /// One call applying `bases` (all of one tenant); one result per basis, in order.
    async fn send_bases(
        &self,
        tenant: &str,
        bases: Vec<ReconcileBacklogItemStatusRequest>,
    ) -> Vec<Result<ReconcileOutcome, Status>> {
        let count = bases.len();
        let mut request = act_for(
            tenant,
            ReconcileBacklogItemStatusesRequest { reconciles: bases },
        );
        request.set_timeout(CALL_DEADLINE);
        let results = match self
            .backlog_items
            .clone()
            .reconcile_backlog_item_statuses(request)
            .await
        {
            Ok(response) => response.into_inner().results,
            Err(status) => return vec![Err(status); count],
        };
        if results.len() != count {
            let status = Status::internal(format!(
                "backlog-item answered {} results for {count} bases",
                results.len()
            ));
            return vec![Err(status); count];
        }
        results
            .into_iter()
            .map(|result| match result.result {
                Some(reconcile_result::Result::Reconciled(response)) => {
                    Ok(ReconcileOutcome::try_from(response.outcome)
                        .unwrap_or(ReconcileOutcome::Unspecified))
                }
                Some(reconcile_result::Result::Error(error)) => {
                    Err(Status::new(Code::from_i32(error.code), error.message))
                }
                None => Err(Status::internal("backlog-item answered an empty result")),
            })
            .collect()
    }

    /// One attempt at some items: their bases, then one call per tenant and
    /// [`BASES_PER_CALL`] bases. One result per item, in order.
    async fn try_reconcile_all(
        &self,
        works: &[&ItemWork],
    ) -> Vec<Result<ReconcileOutcome, Status>> {
        // Bases come from the totals the events carry; in the steady state these resolve
        // without a call (only events without totals read them from the task service).
        // Futures are built eagerly (not in a stream closure) so their lifetimes are
        // concrete, which keeps the handler's future `Send`.
        let lookups: Vec<_> = works.iter().map(|work| self.basis_of(work)).collect();
        let bases: Vec<_> = futures::stream::iter(lookups)
            .buffered(self.options.concurrency)
            .collect()
            .await;
        let mut results: Vec<Option<Result<ReconcileOutcome, Status>>> = vec![None; works.len()];
        let mut by_tenant: HashMap<&str, Vec<(usize, ReconcileBacklogItemStatusRequest)>> =
            HashMap::new();
        for (i, basis) in bases.into_iter().enumerate() {
            match basis {
                Ok(Some(basis)) => by_tenant
                    .entry(works[i].tenant.as_str())
                    .or_default()
                    .push((i, basis)),
                Ok(None) => results[i] = Some(Ok(ReconcileOutcome::Unchanged)),
                Err(status) => results[i] = Some(Err(status)),
            }
        }
        let mut calls = Vec::new();
        for (tenant, bases) in by_tenant {
            let mut bases = bases.into_iter().peekable();
            while bases.peek().is_some() {
                let (places, chunk): (Vec<usize>, Vec<_>) =
                    bases.by_ref().take(BASES_PER_CALL).unzip();
                calls.push(async move { (places, self.send_bases(tenant, chunk).await) });
            }
        }
        let answered = futures::future::join_all(calls).await;
        for (places, outcomes) in answered {
            for (i, outcome) in places.into_iter().zip(outcomes) {
                results[i] = Some(outcome);
            }
        }
        results
            .into_iter()
            .map(|result| result.unwrap_or_else(|| Err(Status::internal("basis not sent"))))
            .collect()
    }

    /// Reconciles the items, retrying those that failed transiently with backoff and
    /// jitter; one result per item, in order.
    async fn reconcile_all(&self, works: &[ItemWork]) -> Vec<Result<(), Failure>> {
        let mut results: Vec<Option<Result<(), Failure>>> = works.iter().map(|_| None).collect();
        let mut pending: Vec<usize> = (0..works.len()).collect();
        let mut attempt = 0;
        while !pending.is_empty() {
            attempt += 1;
            let attempted: Vec<&ItemWork> = pending.iter().map(|&i| &works[i]).collect();
            let outcomes = self.try_reconcile_all(&attempted).await;
            let mut again = Vec::new();
            for (&i, outcome) in pending.iter().zip(outcomes) {
                let work = &works[i];
                match outcome {
                    Ok(outcome) => {
                        self.count(outcome);
                        results[i] = Some(Ok(()));
                    }
                    Err(status) => {
                        // UNIMPLEMENTED means a backlog-item older than this coordinator
                        // (mid-upgrade), not a bad event: hold the feed until it is
                        // upgraded rather than record poison.
                        let transient = is_transient(&status)
                            || matches!(status.code(), Code::Cancelled | Code::Unimplemented);
                        let event_ids: Vec<&str> =
                            work.events.iter().map(|(id, _)| id.as_str()).collect();
                        let last = !transient || attempt >= self.options.attempts;
                        // Logged once at error when the item fails for this batch; a
                        // transient failure that will be retried is a warning.
                        if last {
                            tracing::error!(
                                backlog_item_id = %work.backlog_item_id,
                                tenant = %work.tenant,
                                event_ids = ?event_ids,
                                attempt,
                                code = ?status.code(),
                                error = %status.message(),
                                "reconcile failed"
                            );
                        } else {
                            tracing::warn!(
                                backlog_item_id = %work.backlog_item_id,
                                tenant = %work.tenant,
                                attempt,
                                code = ?status.code(),
                                error = %status.message(),
                                "reconcile failed; retrying"
                            );
                        }
                        if last {
                            results[i] = Some(Err(Failure {
                                permanent: !transient,
                                status,
                            }));
                        } else {
                            again.push(i);
                        }
                    }
                }
            }
            pending = again;
            if !pending.is_empty() {
                tokio::time::sleep(backoff(&self.options.backoff, attempt)).await;
            }
        }
        results
            .into_iter()
            .map(|result| {
                result.unwrap_or_else(|| {
                    Err(Failure {
                        permanent: false,
                        status: Status::internal("item not attempted"),
                    })
                })
            })
            .collect()
    }

    /// Counts an applied basis in the progress report.
    fn count(&self, outcome: ReconcileOutcome) {
        let progress = &self.progress;
        match outcome {
            ReconcileOutcome::IgnoredStale => {
                progress
                    .reconciles_ignored_stale
                    .fetch_add(1, Ordering::Relaxed);
            }
            ReconcileOutcome::Changed => {
                progress.status_changes.fetch_add(1, Ordering::Relaxed);
                progress.reconciles_applied.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                progress.reconciles_applied.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl BatchHandler for Reconciler {
    async fn handle(&self, batch: &[Event]) -> anyhow::Result<()> {
        // The poison table is tiny and empty in the steady state, where it is not read.
        let (skipped, blocking) = self.poison.ids(&self.db).await?;
        let mut followed = Vec::with_capacity(batch.len());
        for event in batch {
            if skipped.contains(&event.event_id) {
                tracing::warn!(event_id = %event.event_id, "skipping an event an operator skipped");
                continue;
            }
            match events::followed(event) {
                Some(event) => followed.push(event),
                None => {
                    tracing::error!(event_id = %event.event_id, event_type = %event.event_type, "undecodable task event; ignored")
                }
            }
        }
        let works = domain::collapse(followed);
        let results = self.reconcile_all(&works).await;
        let mut failed = 0;
        let mut first_error = None;
        for (work, result) in works.iter().zip(&results) {
            match result {
                Ok(()) => {}
                Err(failure) => {
                    failed += 1;
                    let error =
                        format!("{:?}: {}", failure.status.code(), failure.status.message());
                    if failure.permanent {
                        for (event_id, position) in &work.events {
                            let poison = PoisonEvent {
                                event_id: event_id.clone(),
                                position: position.clone(),
                                backlog_item_id: work.backlog_item_id.clone(),
                                tenant_id: work.tenant.clone(),
                                error: error.clone(),
                                record_time_us: now_micros(),
                            };
                            store::record_poison(&self.db, &poison).await?;
                            self.poison.forget();
                        }
                    }
                    first_error
                        .get_or_insert(format!("backlog item {}: {error}", work.backlog_item_id));
                }
            }
        }
        if let Some(error) = first_error {
            anyhow::bail!(
                "{failed} of {} items failed; the batch will be retried from the last checkpoint. First: {error}",
                works.len()
            );
        }
        let healed: Vec<String> = batch
            .iter()
            .filter(|e| blocking.contains(&e.event_id))
            .map(|e| e.event_id.clone())
            .collect();
        store::clear_poison(&self.db, &healed).await?;
        Ok(())
    }

    fn on_handled(&self, last: &Event, events: usize) {
        self.progress.advanced(
            &last.position,
            last.occur_time.as_ref().map_or(0, micros),
            events,
        );
    }

    fn on_heartbeat(&self, heartbeat: &Heartbeat) {
        self.progress.heartbeat(
            &heartbeat.head_position,
            heartbeat.head_occur_time.as_ref(),
            &heartbeat.scanned_position,
        );
    }

    fn on_error(&self, error: &anyhow::Error) {
        self.progress.failed(&format!("{error:#}"));
    }

    fn on_resumed(&self) {
        self.progress.resumed();
    }
}

/// What this replica knows of the poison table, so that a batch need not read it: only
/// the leaseholder records poison events, so once a read finds none, none appear until
/// this replica records one or a new lease term begins (another replica may have recorded
/// some meanwhile); both call [`KnownEmpty::forget`]. Each `forget` bumps a generation,
/// and a read marks the table empty only if no `forget` happened since it began, so a
/// batch running beside one that records an event cannot hide it.
#[derive(Debug, Default)]
struct KnownEmpty {
    /// (generation, known empty)
    state: Mutex<(u64, bool)>,
}

impl KnownEmpty {
    /// Drops what is known: the next batch reads the table. Call *after* recording.
    fn forget(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.0 += 1;
        state.1 = false;
    }

    /// The skipped and the blocking poison event ids, or two empty sets without a read
    /// while the table is known empty.
    async fn ids(&self, db: &Db) -> AppResult<(HashSet<String>, HashSet<String>)> {
        let generation = {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.1 {
                return Ok((HashSet::new(), HashSet::new()));
            }
            state.0
        };
        let ids = store::poison_ids(db).await?;
        if ids.0.is_empty() && ids.1.is_empty() {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.0 == generation {
                state.1 = true;
            }
        }
        Ok(ids)
    }
}
