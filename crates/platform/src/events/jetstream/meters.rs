//! What the outbox relay reports to metrics, labelled with its service:
//!
//! * `agilepm.relay.events` — events this process stored in the stream;
//! * `agilepm.relay.active` — 1 while this process's relay publishes (or would: it is not
//!   standing by), 0 while it stands by or cannot reach NATS: once events flow, the sum
//!   across a service's replicas is 1;
//! * `agilepm.relay.behind` — events committed that the active relay has not stored yet
//!   (by sequence number; 0 on a standby, so the sum over replicas is the backlog).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Weak};

use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;

use crate::events::feed::Position;
use crate::events::feed::hub::Hub;
use crate::wire::metrics::meter;

/// One relay's instruments and the state its gauges read.
pub(crate) struct RelayMeters {
    events: Counter<u64>,
    labels: [KeyValue; 1],
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    active: AtomicBool,
    /// Sequence number of the last event stored.
    relayed_seq: AtomicI64,
}

impl RelayMeters {
    /// Instruments for the relay of `service`, reading `hub`'s head while it runs.
    pub(crate) fn new(service: &'static str, hub: &Arc<Hub>) -> RelayMeters {
        let meter = meter();
        let labels = [KeyValue::new("service", service)];
        let state = Arc::new(State::default());
        let (observed, read): (Weak<State>, Weak<Hub>) =
            (Arc::downgrade(&state), Arc::downgrade(hub));
        let active_labels = labels.clone();
        meter
            .i64_observable_gauge("agilepm.relay.active")
            .with_description("1 while this process relays the outbox to JetStream, 0 on standby")
            .with_callback(move |observer| {
                if let Some(state) = observed.upgrade() {
                    let active = i64::from(state.active.load(Ordering::Relaxed));
                    observer.observe(active, &active_labels);
                }
            })
            .build();
        let observed = Arc::downgrade(&state);
        let behind_labels = labels.clone();
        meter
            .i64_observable_gauge("agilepm.relay.behind")
            .with_description("Events committed that the active relay has not stored in the stream")
            .with_callback(move |observer| {
                if let (Some(state), Some(hub)) = (observed.upgrade(), read.upgrade()) {
                    let behind = if state.active.load(Ordering::Relaxed) {
                        let head = hub.feed_head().map_or(0, |(position, _)| position.seq);
                        (head - state.relayed_seq.load(Ordering::Relaxed)).max(0)
                    } else {
                        0
                    };
                    observer.observe(behind, &behind_labels);
                }
            })
            .build();
        RelayMeters {
            events: meter
                .u64_counter("agilepm.relay.events")
                .with_description("Events this process stored in its service's JetStream stream")
                .build(),
            labels,
            state,
        }
    }

    /// The relay publishes (`true`) or stands by, or cannot reach NATS (`false`).
    pub(crate) fn active(&self, active: bool) {
        self.state.active.store(active, Ordering::Relaxed);
    }

    /// `events` events through `position` were stored.
    pub(crate) fn relayed(&self, events: usize, position: Position) {
        self.events.add(events as u64, &self.labels);
        self.state
            .relayed_seq
            .store(position.seq, Ordering::Relaxed);
        self.state.active.store(true, Ordering::Relaxed);
    }

    /// Where the relay resumes from.
    pub(crate) fn resumed_at(&self, position: Position) {
        self.state
            .relayed_seq
            .store(position.seq, Ordering::Relaxed);
    }
}
