//! The planning service: owns Product, UseCase, Release, Sprint and the tenant's team,
//! runs the planning game across aggregates, and produces the burndown and velocity
//! reports.

use agilepm_platform::runtime::service::ServiceSpec;
use agilepm_platform::storage::db::{Db, Migrations};
use agilepm_platform::wire::config::{CommonConfig, ServiceName};
use agilepm_proto::backlog::v1::backlog_item_service_client::BacklogItemServiceClient;
use agilepm_proto::planning::v1::planning_game_service_server::PlanningGameServiceServer;
use agilepm_proto::planning::v1::product_service_server::ProductServiceServer;
use agilepm_proto::planning::v1::release_service_server::ReleaseServiceServer;
use agilepm_proto::planning::v1::report_service_server::ReportServiceServer;
use agilepm_proto::planning::v1::sprint_service_server::SprintServiceServer;
use agilepm_proto::planning::v1::team_service_server::TeamServiceServer;
use agilepm_proto::planning::v1::use_case_service_server::UseCaseServiceServer;
use agilepm_proto::task::v1::task_service_client::TaskServiceClient;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

static MIGRATIONS: Migrations = agilepm_platform::migrations!();

/// How the planning service starts.
pub static SPEC: ServiceSpec = ServiceSpec {
    name: ServiceName::Planning,
    migrations: &MIGRATIONS,
    serves_feed: true,
};

// One folder per aggregate, each in the layout every service shares (api, commands,
// domain, events, mapping, store); the planning game and the reports span aggregates.
pub mod game;
pub mod product;
pub mod release;
pub mod report;
pub mod sprint;
pub mod team;
pub mod use_case;

// Shared by the modules above.
pub mod peer_sync;
pub mod peers;
pub mod schedule;
pub mod versioned;

/// The planning service's gRPC adapter: one value serves all its gRPC services.
#[derive(Clone)]
pub struct PlanningApi {
    db: Db,
    peers: peers::Peers,
}

/// Runs the planning service on `listener` until `shutdown`.
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
            let api = PlanningApi {
                db: context.db.clone(),
                peers: peers::Peers {
                    backlog_items: BacklogItemServiceClient::new(
                        context.connect(&context.config.peers.backlog_item)?,
                    ),
                    tasks: TaskServiceClient::new(context.connect(&context.config.peers.task)?),
                },
            };
            context.tasks.spawn(peer_sync::record_all(
                context.db.clone(),
                api.peers.clone(),
                context.shutdown.clone(),
            ));
            Ok(server
                .add_service(ProductServiceServer::new(api.clone()))
                .add_service(UseCaseServiceServer::new(api.clone()))
                .add_service(ReleaseServiceServer::new(api.clone()))
                .add_service(SprintServiceServer::new(api.clone()))
                .add_service(PlanningGameServiceServer::new(api.clone()))
                .add_service(ReportServiceServer::new(api.clone()))
                .add_service(TeamServiceServer::new(api.clone())))
        },
    )
    .await
}
