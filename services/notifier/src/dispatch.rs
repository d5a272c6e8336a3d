//! Sending what the inbox recorded: one lane per subscription with pending deliveries.
//!
//! A lane sends its subscription's deliveries one at a time in recorded order, waiting
//! out a failed one's backoff before anything later (per-endpoint order), and ends when
//! it has been idle a while. Lanes run side by side, so a slow or dead endpoint delays
//! only its own; an attempt holds a permit of the whole notifier's (256) and of its
//! tenant's (8) while it runs, and at most `timeout`, so one tenant's endpoints cannot
//! take every connection either. The dispatcher looks for pending work when the inbox
//! or an operator says there is some, and every second in any case.
//!
//! Delivered deliveries are kept for `AGILEPM_NOTIFIER_KEEP_DELIVERED_SECS` (7 days) for
//! operators to list, then pruned.
//!
//! An attempt's outcome is recorded after it; a crash in between repeats the attempt
//! after restart, with the same `webhook-id`: the one way a receiver sees a delivery
//! twice, and the reason receivers de-duplicate by that id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agilepm_platform::domain::time::now_micros;
use agilepm_platform::events::failure_run::FailureRun;
use agilepm_platform::storage::db::Db;
use agilepm_platform::storage::trace_parent::span_context;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::domain::{Delivery, RetryPolicy, State, Subscription};
use crate::meters::Meters;
use crate::sender::{Outcome, Sender};
use crate::store::{self, Attempted};

/// Attempts under way at once, in the whole notifier.
pub const MAX_ATTEMPTS_IN_FLIGHT: usize = 256;
/// Attempts under way at once for one tenant.
pub const MAX_TENANT_ATTEMPTS_IN_FLIGHT: usize = 8;
/// How often the dispatcher looks for pending deliveries without being told.
const SCAN_EVERY: Duration = Duration::from_secs(1);
/// How long a lane with nothing to send waits for more before it ends.
const LANE_IDLE: Duration = Duration::from_secs(10);
/// Pending deliveries a lane reads at once. It sends them in order without reading the
/// subscription again, so a change to it (disabled, deleted, a new URL or secret) takes
/// effect after at most this many deliveries.
const WINDOW: i64 = 32;

/// Sends deliveries.
pub struct Dispatcher {
    db: Db,
    sender: Sender,
    policy: RetryPolicy,
    meters: Arc<Meters>,
    in_flight: Arc<Semaphore>,
    tenants_in_flight: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// A running lane.
struct Lane {
    task: JoinHandle<()>,
    /// Told when the dispatcher sees pending work for the lane's subscription.
    wake: Arc<Notify>,
}

impl Dispatcher {
    /// A dispatcher sending from `db` with `sender`.
    pub fn new(
        db: Db,
        sender: Sender,
        policy: RetryPolicy,
        meters: Arc<Meters>,
    ) -> Arc<Dispatcher> {
        Arc::new(Dispatcher {
            db,
            sender,
            policy,
            meters,
            in_flight: Arc::new(Semaphore::new(MAX_ATTEMPTS_IN_FLIGHT)),
            tenants_in_flight: Mutex::new(HashMap::new()),
        })
    }

    /// Looks for pending work when `wake` is notified (and every second) until
    /// `shutdown`, running a lane per subscription that has some.
    pub async fn run(self: Arc<Self>, wake: Arc<Notify>, shutdown: CancellationToken) {
        let mut lanes: HashMap<String, Lane> = HashMap::new();
        let mut run = FailureRun::new("looking for pending webhook deliveries");
        // Whether new work was announced (rather than the periodic look): only then are
        // running lanes woken, so lanes waiting out a backoff are not re-read each second.
        let mut announced = true;
        while !shutdown.is_cancelled() {
            lanes.retain(|_, lane| !lane.task.is_finished());
            match store::subscriptions_with_pending(&self.db).await {
                Ok(pending) => {
                    run.progressed();
                    for (subscription_id, tenant_id) in pending {
                        if let Some(lane) = lanes.get(&subscription_id) {
                            if announced {
                                lane.wake.notify_one();
                            }
                            continue;
                        }
                        let wake = Arc::new(Notify::new());
                        let task = tokio::spawn(self.clone().lane(
                            subscription_id.clone(),
                            tenant_id,
                            wake.clone(),
                            shutdown.child_token(),
                        ));
                        lanes.insert(subscription_id, Lane { task, wake });
                    }
                }
                Err(error) => {
                    run.failed(&error.to_string());
                }
            }
            if let Ok(oldest) = store::oldest_pending(&self.db).await {
                self.meters.oldest_pending(oldest);
            }
            announced = tokio::select! {
                () = shutdown.cancelled() => break,
                () = wake.notified() => true,
                () = tokio::time::sleep(SCAN_EVERY) => false,
            };
        }
        // An attempt cut short is made again after restart (same webhook-id).
        for lane in lanes.into_values() {
            lane.task.abort();
        }
    }

    /// Sends subscription `subscription_id`'s pending deliveries in order until it has
    /// none for a while, is disabled or deleted, or `shutdown`.
    async fn lane(
        self: Arc<Self>,
        subscription_id: String,
        tenant_id: String,
        wake: Arc<Notify>,
        shutdown: CancellationToken,
    ) {
        let mut failures = FailureRun::new("delivering webhooks to an endpoint");
        let mut database = FailureRun::new("reading or recording webhook deliveries");
        loop {
            let next = async {
                let subscription =
                    store::get_subscription(&self.db, None, &subscription_id).await?;
                let window = match &subscription {
                    Some(s) if s.enabled => {
                        store::next_pending(&self.db, &subscription_id, WINDOW).await?
                    }
                    _ => Vec::new(),
                };
                anyhow::Ok((subscription, window))
            };
            let wait = match next.await {
                // (Deliveries are looked up only for an enabled subscription.)
                Ok((Some(subscription), window)) if !window.is_empty() => {
                    database.progressed();
                    match self
                        .send_in_order(&subscription, &tenant_id, &window, &mut failures)
                        .await
                    {
                        Ok(wait) => wait,
                        Err(error) => backoff(database.failed(&format!("{error:#}"))),
                    }
                }
                Ok((Some(subscription), _)) if subscription.enabled => {
                    database.progressed();
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = wake.notified() => continue,
                        () = tokio::time::sleep(LANE_IDLE) => return,
                    }
                }
                Err(error) => backoff(database.failed(&format!("{error:#}"))),
                // Deleted or disabled: pending deliveries wait for it to be enabled.
                Ok(_) => return,
            };
            if !wait.is_zero() {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    // A redelivery or a new head may be due sooner.
                    () = wake.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }

    /// Attempts `window` (a subscription's first pending deliveries) in order, stopping
    /// at the first that is not due or fails and will be retried. Returns how long to
    /// wait before looking again (zero: at once).
    async fn send_in_order(
        &self,
        subscription: &Subscription,
        tenant_id: &str,
        window: &[Delivery],
        failures: &mut FailureRun,
    ) -> anyhow::Result<Duration> {
        for delivery in window {
            let due_in = delivery.next_attempt_us - now_micros();
            if due_in > 0 {
                return Ok(Duration::from_micros(due_in as u64));
            }
            let permits = self.permits(tenant_id).await;
            // The subscription as it is now, not as the window was read: one disabled,
            // deleted, re-targeted or given a new secret since gets no attempt from the
            // old read (the lane reads it again with a fresh window).
            match store::get_subscription(&self.db, None, &subscription.id).await? {
                Some(now) if now.enabled && now.version == subscription.version => {}
                _ => return Ok(Duration::ZERO),
            }
            let span = attempt_span(delivery);
            let outcome = self
                .sender
                .attempt(subscription, delivery)
                .instrument(span.clone())
                .await;
            drop(permits);
            let attempted = self
                .record(delivery, outcome, failures)
                .instrument(span)
                .await?;
            if attempted.state == State::Pending {
                let retry_in = attempted.next_attempt_us - now_micros();
                return Ok(Duration::from_micros(retry_in.max(0) as u64));
            }
        }
        Ok(Duration::ZERO)
    }

    /// Permits for one attempt: the notifier's and the tenant's.
    async fn permits(
        &self,
        tenant_id: &str,
    ) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        let tenant = self
            .tenants_in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(tenant_id.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(MAX_TENANT_ATTEMPTS_IN_FLIGHT)))
            .clone();
        let tenant = tenant.acquire_owned().await.ok()?;
        let all = self.in_flight.clone().acquire_owned().await.ok()?;
        Some((tenant, all))
    }

    /// Records an attempt's outcome, counts it and logs a failure.
    async fn record(
        &self,
        delivery: &Delivery,
        outcome: Outcome,
        failures: &mut FailureRun,
    ) -> anyhow::Result<Attempted> {
        let attempts = delivery.attempts + 1;
        let attempted = match &outcome {
            Outcome::Delivered { status } => Attempted {
                attempts,
                state: State::Delivered,
                next_attempt_us: 0,
                error: String::new(),
                http_status: i64::from(*status),
            },
            Outcome::Failed { status, error, .. } => {
                let dead = attempts >= self.policy.max_attempts;
                Attempted {
                    attempts,
                    state: if dead { State::Dead } else { State::Pending },
                    next_attempt_us: if dead {
                        0
                    } else {
                        now_micros() + self.policy.delay_after(attempts).as_micros() as i64
                    },
                    error: error.clone(),
                    http_status: i64::from(*status),
                }
            }
        };
        let recorded = store::record_attempt(&self.db, delivery, &attempted).await?;
        match outcome {
            Outcome::Delivered { .. } => {
                failures.progressed();
                if recorded {
                    self.meters.sent(delivery.occur_time_us);
                }
            }
            Outcome::Failed { reason, error, .. } => {
                self.meters.failed(reason);
                if attempted.state == State::Dead {
                    self.meters.dead();
                    tracing::error!(
                        error,
                        attempts,
                        "webhook delivery dead-lettered after its last attempt failed; \
                         RedeliverDeliveries sends it again"
                    );
                } else {
                    failures.failed(&error);
                }
            }
        }
        Ok(attempted)
    }
}

/// The span of one attempt, linked to the request that caused the notification.
fn attempt_span(delivery: &Delivery) -> tracing::Span {
    let span = tracing::info_span!(
        "deliver_webhook",
        delivery_id = %delivery.id,
        webhook_id = %delivery.webhook_id,
        subscription_id = %delivery.subscription_id,
        tenant_id = %delivery.tenant_id,
        attempt = delivery.attempts + 1,
    );
    if let Some(cause) = span_context(&delivery.trace_parent) {
        span.add_link(cause);
    }
    span
}

/// Waiting after the notifier's own database failed `failures` times running.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << failures.min(6)))
}

/// Deliveries deleted per statement when pruning: small transactions that never hold
/// the table long.
const PRUNE_BATCH: i64 = 1000;

/// Deletes deliveries delivered more than `keep` ago, every `min(keep, 1 min)`, until
/// `shutdown`: the table would otherwise grow with every notification ever sent. Dead
/// letters stay until they are redelivered or their subscription is deleted.
pub async fn prune(db: Db, keep: Duration, shutdown: CancellationToken) {
    let every = keep.min(Duration::from_secs(60));
    let mut run = FailureRun::new("pruning delivered webhook deliveries");
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let before = now_micros() - keep.as_micros() as i64;
        loop {
            match store::prune_delivered(&db, before, PRUNE_BATCH).await {
                Ok(deleted) if deleted as i64 == PRUNE_BATCH => continue,
                Ok(_) => {
                    run.progressed();
                    break;
                }
                Err(error) => {
                    run.failed(&error.to_string());
                    break;
                }
            }
        }
    }
}
