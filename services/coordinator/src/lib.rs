//! The coordinator: follows the task service's event feed and reconciles backlog item
//! status from summed task hours, exactly once in effect.
//!
//! | module | holds |
//! |---|---|
//! | [`reconciler`] | batch -> per-item basis -> reconcile RPC, retries, poison events |
//! | [`lease`] | one active follower among replicas |
//! | [`poison`] | events that failed permanently, until an operator skips them |
//! | [`progress`] | counters, lag, health |
//! | [`api`] | the operator RPCs |

use std::sync::Arc;
use std::time::Duration;

use agilepm_platform::config::{CommonConfig, ServiceName};
use agilepm_platform::db::{Db, Migrations};
use agilepm_platform::follower::{DbCheckpoint, FollowOptions, follow};
use agilepm_platform::service::ServiceSpec;
use agilepm_proto::backlog::v1::backlog_item_service_client::BacklogItemServiceClient;
use agilepm_proto::coordinator::v1::coordinator_service_server::{
    CoordinatorServiceServer, SERVICE_NAME,
};
use agilepm_proto::events::v1::event_feed_service_client::EventFeedServiceClient;
use agilepm_proto::task::v1::task_service_client::TaskServiceClient;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

pub mod api;
pub mod lease;
pub mod poison;
pub mod progress;
pub mod reconciler;

use progress::Progress;
use reconciler::{Reconciler, ReconcilerOptions};

static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");
static MIGRATIONS: Migrations = Migrations {
    sqlite: &SQLITE,
    postgres: &POSTGRES,
};

/// How the coordinator starts. It owns no aggregate, so it serves no event feed.
pub static SPEC: ServiceSpec = ServiceSpec {
    name: ServiceName::Coordinator,
    migrations: &MIGRATIONS,
    serves_feed: false,
};

/// Task-feed batches reconciled at once.
const IN_FLIGHT_BATCHES: usize = 4;

/// The checkpoint name of the task feed in the coordinator's database.
pub const CHECKPOINT: &str = "task-feed";

/// Runs the coordinator on `listener` until `shutdown`.
pub async fn run(
    config: CommonConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    agilepm_platform::service::run(
        &SPEC,
        config,
        listener,
        shutdown,
        |context, server| async move {
            let peers = &context.config.peers;
            let backlog_items =
                BacklogItemServiceClient::new(context.connect(&peers.backlog_item)?);
            let tasks = TaskServiceClient::new(context.connect(&peers.task)?);
            let feed = EventFeedServiceClient::new(context.connect(&peers.task)?);
            let progress = Arc::new(Progress::default());
            let reconciler = Reconciler::new(
                context.db.clone(),
                tasks,
                backlog_items,
                progress.clone(),
                ReconcilerOptions::default(),
            );
            context.tasks.spawn(report_health(
                context.db.clone(),
                feed.clone(),
                progress.clone(),
                server.health_reporter(),
                context.shutdown.clone(),
            ));
            context.tasks.spawn(follow_while_leased(
                context.db.clone(),
                feed,
                reconciler,
                context.shutdown.clone(),
            ));
            let api = api::CoordinatorApi::new(context.db.clone(), progress);
            Ok(server.add_service(CoordinatorServiceServer::new(api)))
        },
    )
    .await
}

/// Follows the task feed whenever this replica holds the lease.
async fn follow_while_leased(
    db: Db,
    feed: EventFeedServiceClient<agilepm_platform::client::PeerChannel>,
    reconciler: Reconciler,
    shutdown: CancellationToken,
) {
    let holder = uuid::Uuid::new_v4().to_string();
    let checkpoint = DbCheckpoint::new(db.clone(), CHECKPOINT);
    let options = FollowOptions {
        event_types: reconciler::followed_event_types(),
        // Reconciles commute under the revision guard, so a batch need not wait for the
        // one before it: an event arriving mid-batch is reconciled at once rather than
        // after that batch, which is most of the lag at moderate rates.
        in_flight: IN_FLIGHT_BATCHES,
        ..FollowOptions::default()
    };
    while !shutdown.is_cancelled() {
        match lease::acquire(&db, lease::TASK_FEED_LEASE, &holder).await {
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
                            () = tokio::time::sleep(lease::RENEW_EVERY) => {}
                        }
                        match lease::acquire(&db, lease::TASK_FEED_LEASE, &holder).await {
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
            () = tokio::time::sleep(lease::RENEW_EVERY) => {}
        }
    }
    if let Err(error) = lease::release(&db, lease::TASK_FEED_LEASE, &holder).await {
        tracing::error!(%error, "cannot release the task-feed lease; a standby takes over when it expires");
    }
}

/// Keeps health in step with progress (NOT_SERVING while following has failed for a
/// while or a poison event blocks the feed), and the head current even while blocked.
async fn report_health(
    db: Db,
    mut feed: EventFeedServiceClient<agilepm_platform::client::PeerChannel>,
    progress: Arc<Progress>,
    health: HealthReporter,
    shutdown: CancellationToken,
) {
    let mut serving = true;
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
        let poison = poison::count(&db).await.unwrap_or(0);
        let ok = progress.healthy(api::UNHEALTHY_AFTER_US) && poison == 0;
        if ok != serving {
            serving = ok;
            let status = if ok {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            if !ok {
                tracing::error!(
                    poison,
                    "the coordinator cannot make progress; health NOT_SERVING"
                );
            }
            health.set_service_status(SERVICE_NAME, status).await;
            health.set_service_status("", status).await;
        }
    }
}
