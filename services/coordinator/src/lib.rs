//! The coordinator: follows the task service's event feed and reconciles backlog item
//! status from summed task hours, exactly once in effect.
//!
//! It has the layout every service shares; it owns no aggregate, so its events module
//! decodes the events it follows rather than building any.
//!
//! | module | holds |
//! |---|---|
//! | [`api`] | the operator RPCs: status, parked items, retrying or skipping one |
//! | [`commands`] | the unit of work: a feed batch -> per-item bases -> reconcile RPCs, retries, parking |
//! | [`domain`] | collapsing a batch per item, which failures park an item, lease and health timings |
//! | [`events`] | the task events followed, decoded once |
//! | [`mapping`] | domain <-> protobuf |
//! | [`store`] | the lease and the parked items' events in the coordinator's database |
//! | [`lease`] | one active follower among replicas (the gRPC feed) |
//! | [`shared_work`] | every replica working (the task stream on JetStream) |
//! | [`progress`] | counters, lag, health |

use std::sync::Arc;

use agilepm_platform::runtime::service::ServiceSpec;
use agilepm_platform::storage::db::Migrations;
use agilepm_platform::wire::config::{CommonConfig, FeedSource, ServiceName};
use agilepm_proto::backlog::v1::backlog_item_service_client::BacklogItemServiceClient;
use agilepm_proto::coordinator::v1::coordinator_service_server::CoordinatorServiceServer;
use agilepm_proto::events::v1::event_feed_service_client::EventFeedServiceClient;
use agilepm_proto::task::v1::task_service_client::TaskServiceClient;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod api;
pub mod commands;
pub mod domain;
pub mod events;
pub mod lease;
pub mod mapping;
pub mod progress;
pub mod shared_work;
pub mod store;

use commands::{Reconciler, ReconcilerOptions};
use progress::Progress;

static MIGRATIONS: Migrations = agilepm_platform::migrations!();

/// How the coordinator starts. It owns no aggregate, so it serves no event feed.
pub static SPEC: ServiceSpec = ServiceSpec {
    name: ServiceName::Coordinator,
    migrations: &MIGRATIONS,
    serves_feed: false,
};

/// Task-feed batches reconciled at once.
pub const IN_FLIGHT_BATCHES: usize = 4;

/// The checkpoint name of the task feed in the coordinator's database.
pub const CHECKPOINT: &str = "task-feed";

/// Runs the coordinator on `listener` until `shutdown`.
pub async fn run(
    config: CommonConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    agilepm_platform::runtime::service::run(
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
            progress::measure(&progress);
            let reconciler = Reconciler::new(
                context.db.clone(),
                tasks,
                backlog_items,
                progress.clone(),
                ReconcilerOptions::default(),
            );
            context.tasks.spawn(progress::report_health(
                context.db.clone(),
                feed.clone(),
                progress.clone(),
                server.health_reporter(),
                context.shutdown.clone(),
            ));
            match context.config.nats.feed {
                FeedSource::Grpc => {
                    context.tasks.spawn(lease::follow_while_leased(
                        lease::ttl_from_env()?,
                        context.db.clone(),
                        feed,
                        reconciler.clone(),
                        context.shutdown.clone(),
                    ));
                }
                FeedSource::Nats => {
                    context.tasks.spawn(shared_work::consume_task_stream(
                        context.config.nats.clone(),
                        reconciler.clone(),
                        context.shutdown.clone(),
                    ));
                }
            }
            let api = api::CoordinatorApi::new(context.db.clone(), progress, reconciler.clone());
            Ok(server.add_service(CoordinatorServiceServer::new(api)))
        },
    )
    .await
}
