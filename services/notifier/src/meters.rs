//! What the notifier reports to metrics:
//!
//! * `agilepm.notifier.deliveries.recorded` — deliveries recorded from notifications;
//! * `agilepm.notifier.deliveries.sent` — deliveries an endpoint answered 2xx;
//! * `agilepm.notifier.attempts.failed` — attempts that failed (`reason`: `status`,
//!   `timeout`, `transport`, `refused` for a target no longer allowed);
//! * `agilepm.notifier.deliveries.dead` — deliveries dead-lettered;
//! * `agilepm.notifier.pending.oldest.age` — seconds since the oldest pending delivery
//!   was recorded (0: none pending), as of the dispatcher's last look (every second);
//! * `agilepm.notifier.delivery.latency` — seconds from what a notification tells to its
//!   endpoint's 2xx.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use agilepm_platform::domain::time::now_micros;
use agilepm_platform::wire::metrics::meter;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};

/// The notifier's instruments.
pub struct Meters {
    recorded: Counter<u64>,
    sent: Counter<u64>,
    failed: Counter<u64>,
    dead: Counter<u64>,
    latency: Histogram<f64>,
    /// Recording time of the oldest pending delivery (0: none).
    oldest_pending_us: Arc<AtomicI64>,
}

impl Meters {
    /// Registers the instruments.
    pub fn new() -> Arc<Meters> {
        let meter = meter();
        let oldest_pending_us = Arc::new(AtomicI64::new(0));
        let observed = Arc::downgrade(&oldest_pending_us);
        meter
            .f64_observable_gauge("agilepm.notifier.pending.oldest.age")
            .with_unit("s")
            .with_description("Seconds since the oldest pending delivery was recorded (0: none)")
            .with_callback(move |observer| {
                if let Some(oldest) = observed.upgrade() {
                    let oldest = oldest.load(Ordering::Relaxed);
                    let age = if oldest == 0 {
                        0.0
                    } else {
                        (now_micros() - oldest).max(0) as f64 / 1e6
                    };
                    observer.observe(age, &[]);
                }
            })
            .build();
        Arc::new(Meters {
            recorded: meter
                .u64_counter("agilepm.notifier.deliveries.recorded")
                .with_description("Deliveries recorded from notifications")
                .build(),
            sent: meter
                .u64_counter("agilepm.notifier.deliveries.sent")
                .with_description("Deliveries an endpoint answered with 2xx")
                .build(),
            failed: meter
                .u64_counter("agilepm.notifier.attempts.failed")
                .with_description("Delivery attempts that failed, by reason")
                .build(),
            dead: meter
                .u64_counter("agilepm.notifier.deliveries.dead")
                .with_description("Deliveries dead-lettered after their last attempt failed")
                .build(),
            latency: meter
                .f64_histogram("agilepm.notifier.delivery.latency")
                .with_unit("s")
                .with_description("Seconds from what a notification tells to its endpoint's 2xx")
                .with_boundaries(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0,
                ])
                .build(),
            oldest_pending_us,
        })
    }

    /// `count` deliveries were recorded.
    pub fn recorded(&self, count: u64) {
        if count > 0 {
            self.recorded.add(count, &[]);
        }
    }

    /// A delivery of something that happened at `occur_time_us` was answered 2xx.
    pub fn sent(&self, occur_time_us: i64) {
        self.sent.add(1, &[]);
        self.latency
            .record((now_micros() - occur_time_us).max(0) as f64 / 1e6, &[]);
    }

    /// An attempt failed for `reason`.
    pub fn failed(&self, reason: &'static str) {
        self.failed.add(1, &[KeyValue::new("reason", reason)]);
    }

    /// A delivery was dead-lettered.
    pub fn dead(&self) {
        self.dead.add(1, &[]);
    }

    /// The oldest pending delivery was recorded at `create_time_us` (`None`: none pending).
    pub fn oldest_pending(&self, create_time_us: Option<i64>) {
        self.oldest_pending_us
            .store(create_time_us.unwrap_or(0), Ordering::Relaxed);
    }
}
