//! The planning service: owns Product, UseCase, Release and Sprint, runs the planning
//! game across aggregates, and produces the burndown and velocity reports.

use agilepm_platform::config::{CommonConfig, ServiceName};
use agilepm_platform::db::Migrations;
use agilepm_platform::service::ServiceSpec;
use agilepm_proto::planning::v1::planning_game_service_server::{
    PlanningGameService, PlanningGameServiceServer,
};
use agilepm_proto::planning::v1::product_service_server::{ProductService, ProductServiceServer};
use agilepm_proto::planning::v1::release_service_server::{ReleaseService, ReleaseServiceServer};
use agilepm_proto::planning::v1::report_service_server::{ReportService, ReportServiceServer};
use agilepm_proto::planning::v1::sprint_service_server::{SprintService, SprintServiceServer};
use agilepm_proto::planning::v1::use_case_service_server::{UseCaseService, UseCaseServiceServer};
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");
static MIGRATIONS: Migrations = Migrations {
    sqlite: &SQLITE,
    postgres: &POSTGRES,
};

/// How the planning service starts.
pub static SPEC: ServiceSpec = ServiceSpec {
    name: ServiceName::Planning,
    migrations: &MIGRATIONS,
    serves_feed: true,
};

/// The gRPC adapter of the planning service (one value serves all its gRPC services).
#[derive(Clone)]
pub struct PlanningApi;

impl ProductService for PlanningApi {}
impl UseCaseService for PlanningApi {}
impl ReleaseService for PlanningApi {}
impl SprintService for PlanningApi {}
impl PlanningGameService for PlanningApi {}
impl ReportService for PlanningApi {}

/// Runs the planning service on `listener` until `shutdown`.
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
            let auth = context.auth;
            Ok(server
                .add_service(ProductServiceServer::with_interceptor(
                    PlanningApi,
                    auth.clone(),
                ))
                .add_service(UseCaseServiceServer::with_interceptor(
                    PlanningApi,
                    auth.clone(),
                ))
                .add_service(ReleaseServiceServer::with_interceptor(
                    PlanningApi,
                    auth.clone(),
                ))
                .add_service(SprintServiceServer::with_interceptor(
                    PlanningApi,
                    auth.clone(),
                ))
                .add_service(PlanningGameServiceServer::with_interceptor(
                    PlanningApi,
                    auth.clone(),
                ))
                .add_service(ReportServiceServer::with_interceptor(PlanningApi, auth)))
        },
    )
    .await
}
