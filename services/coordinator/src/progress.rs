//! What the coordinator has done and how far behind it is, for the status RPC and health.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use std::sync::Arc;
use std::time::Duration;

use agilepm_platform::domain::time::{micros, now_micros, timestamp};
use agilepm_platform::storage::db::Db;
use agilepm_platform::wire::client::PeerChannel;
use agilepm_proto::coordinator::v1::GetCoordinatorStatusResponse;
use agilepm_proto::coordinator::v1::coordinator_service_server::SERVICE_NAME;
use agilepm_proto::events::v1::event_feed_service_client::EventFeedServiceClient;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::domain::{FailureKind, UNHEALTHY_AFTER_US};
use crate::store;

/// Counters and the latest positions, shared by the follower and the status RPC.
#[derive(Default)]
pub struct Progress {
    /// Task events handled.
    pub events_processed: AtomicI64,
    /// Reconciles applied (changed or not).
    pub reconciles_applied: AtomicI64,
    /// Reconciles ignored as stale or duplicate.
    pub reconciles_ignored_stale: AtomicI64,
    /// Status changes caused.
    pub status_changes: AtomicI64,
    /// Events of parked items, as last counted.
    pub poison_events: AtomicI64,
    /// Parked items, as last counted.
    pub parked_items: AtomicI64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    position: String,
    position_time_us: i64,
    head: String,
    head_time_us: i64,
    last_error: String,
    last_error_time_us: i64,
    failing_since_us: Option<i64>,
    /// What kind of failure the last one was, where the reconciler said.
    last_failure: Option<FailureKind>,
}

/// The place of a feed position in feed order.
fn key(position: &str) -> agilepm_platform::events::feed::Position {
    agilepm_platform::events::feed::position::feed_order(position)
}

/// Events between two positions (sequence numbers are shared by all writers, so this
/// counts every event in between, whatever its transaction).
fn seq(position: &str) -> i64 {
    key(position).seq
}

impl Progress {
    /// A batch up to `position` (an event that occurred at `occur_time_us`) is done.
    /// Batches from JetStream finish in any order: the position only moves forward.
    pub fn advanced(&self, position: &str, occur_time_us: i64, events: usize) {
        self.events_processed
            .fetch_add(events as i64, Ordering::Relaxed);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if key(position) >= key(&state.position) {
            state.position = position.to_owned();
            state.position_time_us = occur_time_us;
        }
        state.failing_since_us = None;
        state.last_error.clear();
    }

    /// The source is reachable again (a JetStream consumer resubscribed): no longer
    /// failing, though the last error stays on show.
    pub fn resumed(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.failing_since_us = None;
    }

    /// The feed's head (from a heartbeat or `GetFeedHead`).
    pub fn head(&self, head: &str, head_time: Option<&prost_types::Timestamp>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if key(head) >= key(&state.head) {
            state.head = head.to_owned();
            state.head_time_us = head_time.map_or(0, micros);
        }
    }

    /// A heartbeat: the feed's head, and how far this subscription has scanned (every
    /// followed event before it is handled by the time this is called).
    pub fn heartbeat(&self, head: &str, head_time: Option<&prost_types::Timestamp>, scanned: &str) {
        self.head(head, head_time);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !scanned.is_empty() && key(scanned) >= key(&state.position) {
            state.position = scanned.to_owned();
            if scanned == head {
                state.position_time_us = state.head_time_us;
            }
        }
        // Caught up with the head: whatever failed before has healed.
        if state.position == state.head {
            state.failing_since_us = None;
        }
    }

    /// Something failed (of `kind`, where known); progress is paused until the next
    /// success.
    pub fn failed(&self, error: &str, kind: Option<FailureKind>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = now_micros();
        state.last_error = error.to_owned();
        state.last_error_time_us = now;
        state.last_failure = kind;
        state.failing_since_us.get_or_insert(now);
    }

    /// Why readiness is what it is, for operators: ready, ready with parked items, or
    /// the failure that keeps it from being ready.
    pub fn readiness_reason(&self, grace_us: i64, parked_items: i64) -> String {
        if !self.healthy(grace_us) {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let since = state
                .failing_since_us
                .map_or(0, |since| (now_micros() - since) / 1_000_000);
            let fault = if state.last_failure == Some(FailureKind::Configuration) {
                " (a configuration fault: a peer refuses or fails the coordinator's calls \
                 whatever the item; check the peers' addresses, the coordinator's identity \
                 and the access table; nothing is parked for it)"
            } else {
                ""
            };
            return format!(
                "not ready: reconciling has failed for {since} s and is retried with \
                 backoff{fault}: {}",
                state.last_error
            );
        }
        if parked_items > 0 {
            return format!(
                "ready; {parked_items} backlog items parked by a permanent failure, the \
                 others flowing (ListParkedItems, then RetryParkedItem or SkipParkedItem)"
            );
        }
        "ready".into()
    }

    /// Whether the coordinator is making progress: not failing for longer than
    /// `grace_us` microseconds.
    pub fn healthy(&self, grace_us: i64) -> bool {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .failing_since_us
            .is_none_or(|since| now_micros() - since < grace_us)
    }

    /// The status report. Parked items do not make the coordinator unhealthy: every
    /// other item flows on.
    pub fn report(
        &self,
        grace_us: i64,
        poison_events: i64,
        parked_items: i64,
    ) -> GetCoordinatorStatusResponse {
        let healthy = self.healthy(grace_us);
        let readiness_reason = self.readiness_reason(grace_us, parked_items);
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let caught_up = state.head.is_empty() || state.head == state.position;
        GetCoordinatorStatusResponse {
            feed_position: state.position.clone(),
            head_position: state.head.clone(),
            lag_events: if caught_up {
                0
            } else {
                (seq(&state.head) - seq(&state.position)).max(0)
            },
            lag_seconds: if caught_up {
                0.0
            } else {
                (state.head_time_us - state.position_time_us).max(0) as f64 / 1e6
            },
            events_processed: self.events_processed.load(Ordering::Relaxed),
            reconciles_applied: self.reconciles_applied.load(Ordering::Relaxed),
            reconciles_ignored_stale: self.reconciles_ignored_stale.load(Ordering::Relaxed),
            status_changes: self.status_changes.load(Ordering::Relaxed),
            last_error: state.last_error.clone(),
            last_error_time: (state.last_error_time_us > 0)
                .then(|| timestamp(state.last_error_time_us)),
            healthy,
            poison_events,
            parked_items,
            readiness_reason,
        }
    }
}

/// Reports `progress` to metrics, read at each collection:
///
/// * `agilepm.coordinator.lag_events`, `agilepm.coordinator.lag` (seconds) — how far the
///   reconciled position is behind the task feed's head (0 when caught up);
/// * `agilepm.coordinator.parked_items` — backlog items parked by a permanent failure,
///   waiting for an operator while the others flow on (alert on > 0);
/// * `agilepm.coordinator.poison_events` — the events those items hold;
/// * `agilepm.coordinator.events_processed`, `agilepm.coordinator.status_changes` —
///   counters.
pub fn measure(progress: &Arc<Progress>) {
    use opentelemetry::metrics::Meter;
    fn gauge<T: Fn(&Progress) -> f64 + Send + Sync + 'static>(
        meter: &Meter,
        progress: &Arc<Progress>,
        name: &'static str,
        unit: &'static str,
        description: &'static str,
        read: T,
    ) {
        let progress = Arc::downgrade(progress);
        meter
            .f64_observable_gauge(name)
            .with_unit(unit)
            .with_description(description)
            .with_callback(move |observer| {
                if let Some(progress) = progress.upgrade() {
                    observer.observe(read(&progress), &[]);
                }
            })
            .build();
    }
    fn counter(
        meter: &Meter,
        progress: &Arc<Progress>,
        name: &'static str,
        description: &'static str,
        read: fn(&Progress) -> &AtomicI64,
    ) {
        let progress = Arc::downgrade(progress);
        meter
            .u64_observable_counter(name)
            .with_description(description)
            .with_callback(move |observer| {
                if let Some(progress) = progress.upgrade() {
                    let value = read(&progress).load(Ordering::Relaxed);
                    observer.observe(u64::try_from(value).unwrap_or(0), &[]);
                }
            })
            .build();
    }
    let meter = agilepm_platform::wire::metrics::meter();
    let report = |progress: &Progress| progress.report(UNHEALTHY_AFTER_US, 0, 0);
    gauge(
        &meter,
        progress,
        "agilepm.coordinator.lag_events",
        "{event}",
        "Task events committed but not yet reconciled",
        move |p| report(p).lag_events as f64,
    );
    gauge(
        &meter,
        progress,
        "agilepm.coordinator.lag",
        "s",
        "How much older the reconciled position is than the task feed's head",
        move |p| report(p).lag_seconds,
    );
    gauge(
        &meter,
        progress,
        "agilepm.coordinator.poison_events",
        "{event}",
        "Events of backlog items parked by a permanent failure",
        |p| p.poison_events.load(Ordering::Relaxed) as f64,
    );
    gauge(
        &meter,
        progress,
        "agilepm.coordinator.parked_items",
        "{item}",
        "Backlog items parked by a permanent failure, waiting for an operator",
        |p| p.parked_items.load(Ordering::Relaxed) as f64,
    );
    counter(
        &meter,
        progress,
        "agilepm.coordinator.events_processed",
        "Task events the coordinator has handled",
        |p| &p.events_processed,
    );
    counter(
        &meter,
        progress,
        "agilepm.coordinator.status_changes",
        "Backlog item status changes the coordinator caused",
        |p| &p.status_changes,
    );
}

/// Keeps health in step with progress (NOT_SERVING while following has failed for a
/// while; parked items do not stop the others, so they leave it SERVING), the parked
/// counts current, and the head current even while blocked.
pub async fn report_health(
    db: Db,
    mut feed: EventFeedServiceClient<PeerChannel>,
    progress: Arc<Progress>,
    health: HealthReporter,
    shutdown: CancellationToken,
) {
    let mut serving = true;
    let ready_gauge = agilepm_platform::runtime::server::readiness_gauge(
        agilepm_platform::wire::config::ServiceName::Coordinator,
        "progress",
    );
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if let Ok(head) = feed
            .get_feed_head(agilepm_proto::events::v1::GetFeedHeadRequest {})
            .await
        {
            let head = head.into_inner();
            progress.head(&head.head_position, head.head_occur_time.as_ref());
        }
        let poison = store::count_poison(&db).await.unwrap_or(0);
        progress.poison_events.store(poison, Ordering::Relaxed);
        let parked = store::count_parked(&db).await.unwrap_or(0);
        progress.parked_items.store(parked, Ordering::Relaxed);
        let ok = progress.healthy(UNHEALTHY_AFTER_US);
        ready_gauge(ok);
        if ok != serving {
            serving = ok;
            let status = if ok {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            if !ok {
                tracing::error!(
                    reason = %progress.readiness_reason(UNHEALTHY_AFTER_US, parked),
                    "the coordinator cannot make progress; health NOT_SERVING"
                );
            }
            health.set_service_status(SERVICE_NAME, status).await;
            health.set_service_status("", status).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_measured_against_the_head() {
        let progress = Progress::default();
        progress.advanced("f.0.10", 1_000_000, 10);
        progress.heartbeat("f.0.25", Some(&timestamp(4_000_000)), "f.0.10");
        let report = progress.report(1_000_000, 0, 0);
        assert_eq!((report.lag_events, report.lag_seconds), (15, 3.0));
        progress.heartbeat("f.0.25", Some(&timestamp(4_000_000)), "f.0.25");
        assert_eq!(progress.report(1_000_000, 0, 0).lag_events, 0);
    }

    #[test]
    fn failures_turn_unhealthy_after_the_grace_period() {
        let progress = Progress::default();
        progress.failed("backlog-item service unavailable", None);
        assert!(progress.healthy(60_000_000));
        assert!(!progress.healthy(0));
        progress.advanced("f.0.1", 0, 1);
        assert!(progress.healthy(0));
        let report = progress.report(0, 3, 1);
        assert!(report.healthy, "a parked item stops nothing else");
        assert!(
            report.readiness_reason.contains("1 backlog items parked"),
            "{}",
            report.readiness_reason
        );
    }

    #[test]
    fn readiness_names_a_configuration_fault() {
        let progress = Progress::default();
        progress.failed(
            "backlog item x: PermissionDenied: not for this caller",
            Some(FailureKind::Configuration),
        );
        let reason = progress.readiness_reason(0, 0);
        assert!(
            reason.starts_with("not ready") && reason.contains("configuration fault"),
            "{reason}"
        );
        assert!(reason.contains("PermissionDenied"), "{reason}");
    }
}
