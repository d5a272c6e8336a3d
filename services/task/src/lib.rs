//! The task service: owns the Task aggregate, its daily estimation log and the
//! per-backlog-item hour totals the coordinator reconciles from.

use agilepm_platform::runtime::service::ServiceSpec;
use agilepm_platform::storage::db::Migrations;
use agilepm_platform::wire::config::{CommonConfig, ServiceName};
use agilepm_proto::backlog::v1::backlog_item_service_client::BacklogItemServiceClient;
use agilepm_proto::task::v1::task_service_server::TaskServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

static MIGRATIONS: Migrations = agilepm_platform::migrations!();

/// How the task service starts.
pub static SPEC: ServiceSpec = ServiceSpec {
    name: ServiceName::Task,
    migrations: &MIGRATIONS,
    serves_feed: true,
};

pub mod api;
pub mod burndown;
pub mod commands;
pub mod domain;
pub mod events;
pub mod mapping;
pub mod preload;
pub mod store;

pub use api::TaskApi;

/// Runs the task service on `listener` until `shutdown`.
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
            let backlog_items =
                BacklogItemServiceClient::new(context.connect(&context.config.peers.backlog_item)?);
            let api = TaskApi::new(context.db.clone(), backlog_items);
            Ok(server.add_service(TaskServiceServer::new(api)))
        },
    )
    .await
}
