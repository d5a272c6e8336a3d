//! What the feed reports to metrics, labelled with the service whose outbox it serves:
//!
//! * `agilepm.feed.head` — the sequence number of the newest event the hub has read;
//!   its rate is the feed's event rate.
//! * `agilepm.feed.subscribers` — subscriptions open.
//! * `agilepm.feed.delivery_lag` — seconds from an event's commit to its sending to a
//!   subscriber: how far behind subscribers are, whatever their pace.

use std::sync::{Arc, Weak};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, UpDownCounter};

use crate::domain::time::{micros, now_micros};
use crate::events::feed::hub::Hub;
use crate::wire::metrics::{SECONDS_BUCKETS, meter};

/// One feed's instruments.
#[derive(Clone)]
pub(crate) struct FeedMeters {
    subscribers: UpDownCounter<i64>,
    delivery_lag: Histogram<f64>,
    labels: Arc<[KeyValue; 1]>,
}

impl FeedMeters {
    /// Instruments for the feed of `service`, observing `hub`'s head while it runs.
    pub(crate) fn new(service: &'static str, hub: &Arc<Hub>) -> FeedMeters {
        let meter = meter();
        let labels = Arc::new([KeyValue::new("service", service)]);
        let observed: Weak<Hub> = Arc::downgrade(hub);
        let head_labels = labels.clone();
        meter
            .i64_observable_gauge("agilepm.feed.head")
            .with_description("Sequence number of the newest event in the outbox")
            .with_callback(move |observer| {
                if let Some(hub) = observed.upgrade() {
                    let seq = hub.feed_head().map_or(0, |(position, _)| position.seq);
                    observer.observe(seq, &*head_labels);
                }
            })
            .build();
        FeedMeters {
            subscribers: meter
                .i64_up_down_counter("agilepm.feed.subscribers")
                .with_description("Subscriptions open on the event feed")
                .build(),
            delivery_lag: meter
                .f64_histogram("agilepm.feed.delivery_lag")
                .with_unit("s")
                .with_description("Time from an event's commit to its sending to a subscriber")
                .with_boundaries(SECONDS_BUCKETS.to_vec())
                .build(),
            labels,
        }
    }

    /// A subscription opened (`+1`) or ended (`-1`).
    pub(crate) fn subscribers(&self, change: i64) {
        self.subscribers.add(change, &*self.labels);
    }

    /// An event that occurred at `occurred` is being sent.
    pub(crate) fn delivered(&self, occurred: &prost_types::Timestamp) {
        let lag = (now_micros() - micros(occurred)).max(0) as f64 / 1e6;
        self.delivery_lag.record(lag, &*self.labels);
    }
}
