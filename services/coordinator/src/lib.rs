//! The coordinator: follows the task service's event feed and reconciles backlog item
//! status from summed task hours, exactly once in effect.

use agilepm_platform::config::{CommonConfig, ServiceName};
use agilepm_platform::db::Migrations;
use agilepm_platform::service::ServiceSpec;
use agilepm_proto::coordinator::v1::coordinator_service_server::{
    CoordinatorService, CoordinatorServiceServer,
};
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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

/// The operator interface of the coordinator.
pub struct CoordinatorApi;

impl CoordinatorService for CoordinatorApi {}

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
            Ok(
                server.add_service(CoordinatorServiceServer::with_interceptor(
                    CoordinatorApi,
                    context.auth,
                )),
            )
        },
    )
    .await
}
