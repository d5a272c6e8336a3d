//! The heart of the consistency design (DESIGN.md §3): task events in, backlog item
//! status out, exactly once in effect.
//!
//! For each batch from the task feed the reconciler collapses the events per backlog
//! item (twelve estimates of one item become one reconcile), takes the newest
//! `(sum, count, revision)` the events carry (each task event carries the item's totals
//! as committed with it, so no read of the task service is needed), and hands that basis to the
//! backlog-item service, which applies it only if its revision is newer than the last one
//! applied. Replays, duplicates and reordering are therefore harmless, and the feed
//! position is saved (by the follower) only after every item of the batch succeeded.

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
use agilepm_proto::backlog::v1::{ReconcileBacklogItemStatusRequest, ReconcileOutcome};
use agilepm_proto::coordinator::v1::PoisonEvent;
use agilepm_proto::events::v1::{Event, Heartbeat};
use agilepm_proto::task::v1::task_service_client::TaskServiceClient;
use agilepm_proto::task::v1::{
    BacklogItemTaskTotals, GetBacklogItemTaskTotalsRequest, TaskDefined,
    TaskHoursRemainingEstimated, TaskRemoved,
};
use futures::StreamExt as _;
use prost::Message as _;
use tonic::Status;

use crate::modes::Modes;
use crate::poison;
use crate::progress::Progress;

/// Deadline of each call to a peer.
const CALL_DEADLINE: Duration = Duration::from_secs(2);

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
    /// Items reconciled at once.
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
    modes: Modes,
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
        modes: Modes,
        progress: Arc<Progress>,
        options: ReconcilerOptions,
    ) -> Reconciler {
        Reconciler {
            db,
            tasks,
            backlog_items,
            modes,
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

    /// One attempt at one item.
    async fn try_reconcile(&self, work: &ItemWork) -> Result<ReconcileOutcome, Status> {
        let totals = match &work.totals {
            Some(totals) if !work.read_totals => totals.clone(),
            _ => self.read_totals(work).await?,
        };
        if totals.revision == 0 {
            return Ok(ReconcileOutcome::Unchanged);
        }
        let mode = self
            .modes
            .of_item(&work.tenant, &work.backlog_item_id)
            .await?;
        let mut request = act_for(
            &work.tenant,
            ReconcileBacklogItemStatusRequest {
                id: work.backlog_item_id.clone(),
                task_hours_remaining: totals.hours_remaining,
                task_count: totals.task_count,
                task_revision: totals.revision,
                transition_mode: mode as i32,
            },
        );
        request.set_timeout(CALL_DEADLINE);
        let response = self
            .backlog_items
            .clone()
            .reconcile_backlog_item_status(request)
            .await?
            .into_inner();
        Ok(ReconcileOutcome::try_from(response.outcome).unwrap_or(ReconcileOutcome::Unspecified))
    }

    /// Reconciles one item, retrying transient failures with backoff and jitter.
    async fn reconcile(&self, work: &ItemWork) -> Result<(), Failure> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_reconcile(work).await {
                Ok(outcome) => {
                    match outcome {
                        ReconcileOutcome::IgnoredStale => self
                            .progress
                            .reconciles_ignored_stale
                            .fetch_add(1, Ordering::Relaxed),
                        ReconcileOutcome::Changed => {
                            self.progress.status_changes.fetch_add(1, Ordering::Relaxed);
                            self.progress
                                .reconciles_applied
                                .fetch_add(1, Ordering::Relaxed)
                        }
                        _ => self
                            .progress
                            .reconciles_applied
                            .fetch_add(1, Ordering::Relaxed),
                    };
                    return Ok(());
                }
                Err(status) => {
                    let transient =
                        is_transient(&status) || status.code() == tonic::Code::Cancelled;
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
                        return Err(Failure {
                            permanent: !transient,
                            status,
                        });
                    }
                    tokio::time::sleep(backoff(&self.options.backoff, attempt)).await;
                }
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
        // Futures are built eagerly (not in a stream closure) so their lifetimes are
        // concrete, which keeps the handler's future `Send`.
        let attempts: Vec<_> = works
            .iter()
            .enumerate()
            .map(|(i, work)| async move { (i, self.reconcile(work).await) })
            .collect();
        let results: Vec<(usize, Result<(), Failure>)> = futures::stream::iter(attempts)
            .buffer_unordered(self.options.concurrency)
            .collect()
            .await;
        let mut failed = 0;
        let mut first_error = None;
        for (i, result) in &results {
            let work = &works[*i];
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
