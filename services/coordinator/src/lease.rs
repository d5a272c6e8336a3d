//! One active follower among coordinator replicas: a lease row in the coordinator's own
//! database. The holder renews it well before it expires; a standby takes it over only
//! once it has expired. Correctness never depends on the lease (the backlog-item
//! service's revision guard makes duplicate or reordered reconciles harmless); the lease
//! only keeps replicas from doing the same work twice in the steady state.

use agilepm_platform::events::follower::{DbCheckpoint, FollowOptions, follow};
use agilepm_platform::storage::db::Db;
use agilepm_platform::wire::client::PeerChannel;
use agilepm_proto::events::v1::event_feed_service_client::EventFeedServiceClient;
use tokio_util::sync::CancellationToken;

use crate::commands::Reconciler;
use std::time::Duration;

use anyhow::Context as _;

use crate::domain::{LEASE_TTL, LEASE_TTL_BOUNDS, TASK_FEED_LEASE, lease_renewal};
use crate::{CHECKPOINT, IN_FLIGHT_BATCHES, events, store};

/// Follows the task feed whenever this replica holds the lease.
pub async fn follow_while_leased(
    ttl: Duration,
    db: Db,
    feed: EventFeedServiceClient<PeerChannel>,
    reconciler: Reconciler,
    shutdown: CancellationToken,
) {
    let holder = uuid::Uuid::new_v4().to_string();
    let checkpoint = DbCheckpoint::new(db.clone(), CHECKPOINT);
    let options = FollowOptions {
        event_types: events::followed_event_types(),
        // Reconciles commute under the revision guard, so a batch need not wait for the
        // one before it: an event arriving mid-batch is reconciled at once rather than
        // after that batch, which is most of the lag at moderate rates.
        in_flight: IN_FLIGHT_BATCHES,
        // The task feed's retention keeps whatever the coordinator has not saved past.
        consumer: Some("coordinator".to_owned()),
        ..FollowOptions::default()
    };
    while !shutdown.is_cancelled() {
        match store::acquire_lease(&db, TASK_FEED_LEASE, &holder, ttl).await {
            Ok(true) => {
                tracing::info!(%holder, "holding the task-feed lease; following");
                reconciler.forget_known_poison();
                let lost = CancellationToken::new();
                let following = follow(
                    feed.clone(),
                    &checkpoint,
                    &reconciler,
                    &options,
                    lost.clone(),
                );
                let renewing = async {
                    loop {
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = tokio::time::sleep(lease_renewal(ttl)) => {}
                        }
                        match store::acquire_lease(&db, TASK_FEED_LEASE, &holder, ttl).await {
                            Ok(true) => {}
                            Ok(false) => {
                                tracing::error!(%holder, "lost the task-feed lease to another replica; standing by");
                                break;
                            }
                            Err(error) => {
                                tracing::error!(%error, "cannot renew the task-feed lease")
                            }
                        }
                    }
                    lost.cancel();
                };
                tokio::join!(following, renewing);
            }
            Ok(false) => {}
            Err(error) => tracing::error!(%error, "cannot read the task-feed lease"),
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(lease_renewal(ttl)) => {}
        }
    }
    if let Err(error) = store::release_lease(&db, TASK_FEED_LEASE, &holder).await {
        tracing::error!(%error, "cannot release the task-feed lease; a standby takes over when it expires");
    }
}

/// The lease's term: `AGILEPM_LEASE_TTL_MS` if set (1 s to 10 min), else 10 s. A shorter
/// term hands a killed leaseholder's work to a standby sooner, at the cost of more
/// renewals.
pub fn ttl_from_env() -> anyhow::Result<Duration> {
    let Ok(text) = std::env::var("AGILEPM_LEASE_TTL_MS") else {
        return Ok(LEASE_TTL);
    };
    let ms: u64 = text.parse().with_context(|| {
        format!("AGILEPM_LEASE_TTL_MS: {text:?} is not a number of milliseconds")
    })?;
    let ttl = Duration::from_millis(ms);
    let (shortest, longest) = LEASE_TTL_BOUNDS;
    anyhow::ensure!(
        (shortest..=longest).contains(&ttl),
        "AGILEPM_LEASE_TTL_MS: {ms} is outside {} to {}",
        shortest.as_millis(),
        longest.as_millis()
    );
    Ok(ttl)
}
