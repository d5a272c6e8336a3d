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
use crate::domain::{LEASE_RENEW_EVERY, TASK_FEED_LEASE};
use crate::{CHECKPOINT, IN_FLIGHT_BATCHES, events, store};

/// Follows the task feed whenever this replica holds the lease.
pub async fn follow_while_leased(
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
        ..FollowOptions::default()
    };
    while !shutdown.is_cancelled() {
        match store::acquire_lease(&db, TASK_FEED_LEASE, &holder).await {
            Ok(true) => {
                tracing::info!(%holder, "holding the task-feed lease; following");
                reconciler.begin_lease_term();
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
                            () = tokio::time::sleep(LEASE_RENEW_EVERY) => {}
                        }
                        match store::acquire_lease(&db, TASK_FEED_LEASE, &holder).await {
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
            () = tokio::time::sleep(LEASE_RENEW_EVERY) => {}
        }
    }
    if let Err(error) = store::release_lease(&db, TASK_FEED_LEASE, &holder).await {
        tracing::error!(%error, "cannot release the task-feed lease; a standby takes over when it expires");
    }
}
