//! Every replica working (`AGILEPM_FEED=nats`): the task service's JetStream stream,
//! consumed through one durable consumer that all replicas pull from.
//!
//! No lease: JetStream hands each message to one replica, and one a replica does not
//! acknowledge (it was killed, or cut off) goes to another after the ack wait. Messages of
//! one backlog item may therefore be reconciled by two replicas at once, or out of order;
//! the backlog-item service's revision guard applies a basis only if it is newer than the
//! last one applied, so the outcome is the same as in feed order (docs/design.md §3, and
//! deploy/README.md "Past one machine" for why no per-item ordering is needed).

use std::sync::Arc;
use std::time::Duration;

use agilepm_platform::events::jetstream::consumer::{ConsumeOptions, consume};
use agilepm_platform::wire::config::{NatsConfig, ServiceName};
use tokio_util::sync::CancellationToken;

use crate::commands::Reconciler;
use crate::{IN_FLIGHT_BATCHES, events};

/// The durable consumer the replicas share on the task stream.
pub const DURABLE: &str = "coordinator";

/// How often a replica re-reads the poison table, which other replicas write.
const POISON_RECHECK: Duration = Duration::from_secs(1);

/// Reconciles from the task stream until `shutdown`.
pub async fn consume_task_stream(
    config: NatsConfig,
    reconciler: Reconciler,
    shutdown: CancellationToken,
) {
    let reconciler = Arc::new(reconciler);
    let options = ConsumeOptions {
        durable: DURABLE.to_owned(),
        event_types: events::followed_event_types(),
        in_flight: IN_FLIGHT_BATCHES,
        ..ConsumeOptions::default()
    };
    let rechecking = {
        let reconciler = reconciler.clone();
        let shutdown = shutdown.clone();
        async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(POISON_RECHECK) => reconciler.forget_known_poison(),
                }
            }
        }
    };
    tracing::info!(
        durable = DURABLE,
        "reconciling from the task stream on JetStream"
    );
    tokio::join!(
        consume(
            &config,
            ServiceName::Coordinator,
            ServiceName::Task,
            &options,
            &*reconciler,
            shutdown
        ),
        rechecking
    );
}
