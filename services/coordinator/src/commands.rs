//! The coordinator's unit of work, and the heart of the consistency design (docs/design.md §3): task events in, backlog item
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
//! follower) only after every item of the batch succeeded or was parked.
//!
//! Failures are isolated by item (DESIGN §8): reconciles of different items commute, so
//! an item whose reconcile fails permanently (`domain::failure_kind`) is parked (its
//! events recorded in `store`) and its later events wait behind it, while every other
//! item of every tenant flows on; an operator retries or skips it (`api`). A failure
//! that is not the item's own (a peer down, a peer refusing our identity) parks nothing:
//! the batch is retried with backoff and readiness says why.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agilepm_platform::domain::error::{AppError, AppResult};
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

use crate::domain::{self, FailureKind, ItemWork, PoisonEvent, Totals};
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
    kind: FailureKind,
    status: Status,
}

/// Reconciles backlog item status from the task feed. Clones share the peers, the
/// progress and what is known of the parked items (the follower and the operator API
/// hold one each).
#[derive(Clone)]
pub struct Reconciler {
    db: Db,
    tasks: TaskServiceClient<PeerChannel>,
    backlog_items: BacklogItemServiceClient<PeerChannel>,
    progress: Arc<Progress>,
    options: ReconcilerOptions,
    poison: Arc<KnownEmpty>,
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
            poison: Arc::default(),
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
                        let kind = domain::failure_kind(status.code());
                        let event_ids: Vec<&str> =
                            work.events.iter().map(|(id, _)| id.as_str()).collect();
                        let last =
                            kind == FailureKind::Permanent || attempt >= self.options.attempts;
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
                                kind = ?kind,
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
                            results[i] = Some(Err(Failure { kind, status }));
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
                        kind: FailureKind::Transient,
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

impl Reconciler {
    /// Parks `work`'s item: records its events (the first with `error`) so that its
    /// later events wait behind them.
    async fn park(&self, work: &ItemWork, error: &str) -> AppResult<()> {
        for (event_id, position) in &work.events {
            let poison = PoisonEvent {
                event_id: event_id.clone(),
                position: position.clone(),
                backlog_item_id: work.backlog_item_id.clone(),
                tenant_id: work.tenant.clone(),
                error: error.to_owned(),
                record_time_us: now_micros(),
            };
            store::record_poison(&self.db, &poison).await?;
        }
        self.poison.forget();
        Ok(())
    }

    /// An operator's retry of a parked item: applies its freshest totals (read from the
    /// task service now, so they stand for every event waiting behind it) and releases
    /// the events it held. Events that arrived meanwhile are settled by another round.
    /// Returns how many events were released; NOT_FOUND if the item is not parked;
    /// UNAVAILABLE if a peer did not answer; FAILED_PRECONDITION naming the failure if
    /// the reconcile fails again (the item stays parked, with that failure).
    pub async fn retry_parked(&self, tenant: &str, item: &str) -> AppResult<u64> {
        let mut released = 0;
        for round in 0..4 {
            let events = store::parked_events(&self.db, tenant, item).await?;
            if events.is_empty() {
                if round == 0 {
                    return Err(AppError::not_found(format!(
                        "parked backlog item {item} of tenant {tenant}"
                    )));
                }
                break;
            }
            let work = ItemWork {
                tenant: tenant.to_owned(),
                backlog_item_id: item.to_owned(),
                events: events
                    .iter()
                    .map(|id| (id.clone(), String::new()))
                    .collect(),
                totals: None,
                read_totals: true,
            };
            match self.try_reconcile_all(&[&work]).await.pop() {
                Some(Ok(outcome)) => {
                    self.count(outcome);
                    store::release(&self.db, &events).await?;
                    released += events.len() as u64;
                }
                // A peer down or slow says nothing about the item: the caller may retry.
                Some(Err(status))
                    if domain::failure_kind(status.code()) == FailureKind::Transient =>
                {
                    return Err(AppError::Unavailable(format!(
                        "backlog item {item} stays parked: a peer did not answer ({:?}: {}); retry",
                        status.code(),
                        status.message()
                    )));
                }
                Some(Err(status)) => {
                    let error = format!("{:?}: {}", status.code(), status.message());
                    store::record_retry_failure(&self.db, tenant, item, &error).await?;
                    return Err(AppError::precondition(format!(
                        "backlog item {item} stays parked: the retry failed with {error}"
                    )));
                }
                None => break,
            }
        }
        self.poison.forget();
        tracing::warn!(tenant = %tenant, backlog_item_id = %item, released, "operator retried a parked item; released");
        Ok(released)
    }

    /// An operator's skip of a parked item: releases it without applying what waited.
    pub async fn skip_parked(&self, tenant: &str, item: &str) -> AppResult<u64> {
        let skipped = store::skip_item(&self.db, tenant, item).await?;
        if skipped == 0 {
            return Err(AppError::not_found(format!(
                "parked backlog item {item} of tenant {tenant}"
            )));
        }
        self.poison.forget();
        tracing::warn!(tenant = %tenant, backlog_item_id = %item, skipped, "operator skipped a parked item");
        Ok(skipped)
    }

    /// What is known of the parked items changed behind this replica's back (an
    /// operator skipped an event through the older RPC).
    pub fn forget_parked(&self) {
        self.poison.forget();
    }
}

impl BatchHandler for Reconciler {
    async fn handle(&self, batch: &[Event]) -> anyhow::Result<()> {
        // The poison table is tiny and empty in the steady state, where it is not read.
        let (skipped, parked) = self.poison.read(&self.db).await?;
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
        // A parked item's later events wait behind it, in feed order; the others go on.
        let (waiting, works): (Vec<ItemWork>, Vec<ItemWork>) = domain::collapse(followed)
            .into_iter()
            .partition(|w| parked.contains(&(w.tenant.clone(), w.backlog_item_id.clone())));
        for work in &waiting {
            self.park(work, "waiting behind the item's parked events")
                .await?;
        }
        let results = self.reconcile_all(&works).await;
        let mut failed = 0;
        let mut first_error: Option<(FailureKind, String)> = None;
        for (work, result) in works.iter().zip(&results) {
            let Err(failure) = result else { continue };
            let error = format!("{:?}: {}", failure.status.code(), failure.status.message());
            if failure.kind == FailureKind::Permanent {
                // Logged once at error (and so reported), then out of everyone's way.
                tracing::error!(
                    tenant = %work.tenant,
                    backlog_item_id = %work.backlog_item_id,
                    error = %error,
                    "backlog item parked: its reconcile can never succeed as it is; \
                     the other items go on (RetryParkedItem or SkipParkedItem)"
                );
                self.park(work, &error).await?;
                continue;
            }
            failed += 1;
            first_error.get_or_insert((
                failure.kind,
                format!("backlog item {}: {error}", work.backlog_item_id),
            ));
        }
        if let Some((kind, error)) = first_error {
            return Err(BatchFailed {
                kind,
                message: format!(
                    "{failed} of {} items failed; the batch will be retried from the last checkpoint. First: {error}",
                    works.len()
                ),
            }
            .into());
        }
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
        let kind = error
            .downcast_ref::<BatchFailed>()
            .map(|failed| failed.kind);
        self.progress.failed(&format!("{error:#}"), kind);
    }

    fn on_resumed(&self) {
        self.progress.resumed();
    }
}

/// A batch that must be retried, and the kind of its first failure (readiness names a
/// configuration fault as such).
#[derive(Debug)]
struct BatchFailed {
    kind: FailureKind,
    message: String,
}

impl std::fmt::Display for BatchFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BatchFailed {}

/// What this replica knows of the poison table, so that a batch need not read it: once a
/// read finds it empty, it stays empty until this process parks an item, an operator acts
/// through this process, or a new lease term begins (another replica may have parked
/// some meanwhile); each calls [`KnownEmpty::forget`]. Each `forget` bumps a generation,
/// and a read marks the table empty only if no `forget` happened since it began, so a
/// batch running beside one that parks an item cannot hide it.
#[derive(Debug, Default)]
struct KnownEmpty {
    /// (generation, known empty)
    state: Mutex<(u64, bool)>,
}

/// The skipped poison events (by id) and the parked items (tenant, item).
type Parked = (HashSet<String>, HashSet<(String, String)>);

impl KnownEmpty {
    /// Drops what is known: the next batch reads the table. Call *after* recording.
    fn forget(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.0 += 1;
        state.1 = false;
    }

    /// The skipped events and the parked items, or two empty sets without a read while
    /// the table is known empty.
    async fn read(&self, db: &Db) -> AppResult<Parked> {
        let generation = {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.1 {
                return Ok((HashSet::new(), HashSet::new()));
            }
            state.0
        };
        let parked = store::parked(db).await?;
        if parked.0.is_empty() && parked.1.is_empty() {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.0 == generation {
                state.1 = true;
            }
        }
        Ok(parked)
    }
}
