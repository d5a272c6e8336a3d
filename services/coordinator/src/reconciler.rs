//! The heart of the consistency design (DESIGN.md §3): task events in, backlog item
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

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use agilepm_platform::auth::act_for;
use agilepm_platform::client::PeerChannel;
use agilepm_platform::db::Db;
use agilepm_platform::error::is_transient;
use agilepm_platform::follower::{BatchHandler, FollowOptions, backoff};
use agilepm_platform::time::micros;
use agilepm_proto::EventType;
use agilepm_proto::backlog::v1::backlog_item_service_client::BacklogItemServiceClient;
use agilepm_proto::backlog::v1::{
    ReconcileBacklogItemStatusRequest, ReconcileBacklogItemStatusesRequest, ReconcileOutcome,
    reconcile_result,
};
use agilepm_proto::coordinator::v1::PoisonEvent;
use agilepm_proto::events::v1::{Event, Heartbeat};
use agilepm_proto::task::v1::task_service_client::TaskServiceClient;
use agilepm_proto::task::v1::{
    BacklogItemTaskTotals, GetBacklogItemTaskTotalsRequest, TaskDefined,
    TaskHoursRemainingEstimated, TaskRemoved,
};
use futures::StreamExt as _;
use prost::Message as _;
use tonic::{Code, Status};

use crate::poison;
use crate::progress::Progress;

/// Deadline of each call to a peer.
const CALL_DEADLINE: Duration = Duration::from_secs(2);
/// Most bases in one `ReconcileBacklogItemStatuses` call (the service takes up to 1000).
const BASES_PER_CALL: usize = 256;

/// The task events that change an item's hour totals.
pub fn followed_event_types() -> Vec<String> {
    vec![
        TaskDefined::EVENT_TYPE.into(),
        TaskHoursRemainingEstimated::EVENT_TYPE.into(),
        TaskRemoved::EVENT_TYPE.into(),
    ]
}

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

/// One backlog item's share of a batch.
struct ItemWork {
    tenant: String,
    backlog_item_id: String,
    events: Vec<(String, String)>,
    /// The newest totals the events carry (highest revision). Any committed totals are a
    /// valid basis, and the newest of the batch is what a fresh read would return unless
    /// a later change is already on its way down the feed; the revision guard makes
    /// either order safe.
    totals: Option<BacklogItemTaskTotals>,
    /// Some event came without totals: read them from the task service instead.
    read_totals: bool,
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
    poison: poison::KnownEmpty,
}

/// The backlog item a task event is about, and the item's totals the event carries (the
/// totals right after the change, as committed with it).
fn backlog_item_of(event: &Event) -> Option<(String, Option<BacklogItemTaskTotals>)> {
    let bytes = event.payload.as_ref()?.value.as_slice();
    match event.event_type.as_str() {
        t if t == TaskDefined::EVENT_TYPE => {
            let defined = TaskDefined::decode(bytes).ok()?;
            Some((defined.task?.backlog_item_id, defined.totals))
        }
        t if t == TaskHoursRemainingEstimated::EVENT_TYPE => {
            let estimated = TaskHoursRemainingEstimated::decode(bytes).ok()?;
            Some((estimated.backlog_item_id, estimated.totals))
        }
        t if t == TaskRemoved::EVENT_TYPE => {
            let removed = TaskRemoved::decode(bytes).ok()?;
            Some((removed.backlog_item_id, removed.totals))
        }
        _ => None,
    }
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
            poison: poison::KnownEmpty::default(),
        }
    }

    /// This replica (again) holds the task-feed lease: another replica may have recorded
    /// poison events meanwhile.
    pub fn begin_lease_term(&self) {
        self.poison.forget();
    }

    /// The item's totals, read from the task service (for events without totals).
    async fn read_totals(&self, work: &ItemWork) -> Result<BacklogItemTaskTotals, Status> {
        let mut request = act_for(
            &work.tenant,
            GetBacklogItemTaskTotalsRequest {
                backlog_item_id: work.backlog_item_id.clone(),
            },
        );
        request.set_timeout(CALL_DEADLINE);
        Ok(self
            .tasks
            .clone()
            .get_backlog_item_task_totals(request)
            .await?
            .into_inner()
            .totals
            .unwrap_or_default())
    }

    /// The basis to send for one item: its newest totals (read from the task service if
    /// an event came without them). `None` when there is nothing to apply (no task change
    /// has been committed for the item). The product's transition mode is not ours to
    /// send: the backlog-item service applies the one the planning service recorded.
    async fn basis_of(
        &self,
        work: &ItemWork,
    ) -> Result<Option<ReconcileBacklogItemStatusRequest>, Status> {
        let totals = match &work.totals {
            Some(totals) if !work.read_totals => totals.clone(),
            _ => self.read_totals(work).await?,
        };
        if totals.revision == 0 {
            return Ok(None);
        }
        Ok(Some(ReconcileBacklogItemStatusRequest {
            id: work.backlog_item_id.clone(),
            task_hours_remaining: totals.hours_remaining,
            task_count: totals.task_count,
            task_revision: totals.revision,
            transition_mode: 0,
        }))
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
                        tracing::error!(
                            backlog_item_id = %work.backlog_item_id,
                            tenant = %work.tenant,
                            event_ids = ?event_ids,
                            attempt,
                            code = ?status.code(),
                            error = %status.message(),
                            "reconcile failed"
                        );
                        if !transient || attempt >= self.options.attempts {
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
        // Collapse per item, keeping first-seen order.
        let mut order = Vec::new();
        let mut items: HashMap<(String, String), ItemWork> = HashMap::new();
        for event in batch {
            if skipped.contains(&event.event_id) {
                tracing::warn!(event_id = %event.event_id, "skipping an event an operator skipped");
                continue;
            }
            let Some((backlog_item_id, totals)) = backlog_item_of(event) else {
                tracing::error!(event_id = %event.event_id, event_type = %event.event_type, "undecodable task event; ignored");
                continue;
            };
            let key = (event.tenant_id.clone(), backlog_item_id.clone());
            let work = items.entry(key.clone()).or_insert_with(|| {
                order.push(key);
                ItemWork {
                    tenant: event.tenant_id.clone(),
                    backlog_item_id,
                    events: Vec::new(),
                    totals: None,
                    read_totals: false,
                }
            });
            work.events
                .push((event.event_id.clone(), event.position.clone()));
            match totals {
                Some(totals)
                    if work
                        .totals
                        .as_ref()
                        .is_none_or(|t| t.revision < totals.revision) =>
                {
                    work.totals = Some(totals)
                }
                Some(_) => {}
                None => work.read_totals = true,
            }
        }
        let works: Vec<ItemWork> = order
            .into_iter()
            .filter_map(|key| items.remove(&key))
            .collect();
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
                                record_time: None,
                            };
                            poison::record(&self.db, &poison).await?;
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
        poison::clear(&self.db, &healed).await?;
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
}
