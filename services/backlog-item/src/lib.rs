//! The backlog-item service: owns the BacklogItem aggregate, its status machine, backlog
//! ranking, and the reconcile RPC the coordinator drives.

use agilepm_platform::runtime::service::ServiceSpec;
use agilepm_platform::storage::db::Migrations;
use agilepm_platform::wire::config::{CommonConfig, ServiceName};
use agilepm_proto::backlog::v1::backlog_item_service_server::BacklogItemServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

static MIGRATIONS: Migrations = agilepm_platform::migrations!();

/// How the backlog-item service starts.
pub static SPEC: ServiceSpec = ServiceSpec {
    name: ServiceName::BacklogItem,
    migrations: &MIGRATIONS,
    serves_feed: true,
};

pub mod api;
pub mod commands;
pub mod domain;
pub mod events;
pub mod mapping;
pub mod store;

pub use api::BacklogItemApi;

/// Runs the backlog-item service on `listener` until `shutdown`.
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
            Ok(
                server.add_service(BacklogItemServiceServer::new(BacklogItemApi::new(
                    context.db.clone(),
                ))),
            )
        },
    )
    .await
}
