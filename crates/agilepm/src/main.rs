//! `agilepm`: run the whole system for development, or mint a token.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use agilepm::postgres::{ensure_database, with_database};
use agilepm::system::{RunningSystem, SystemConfig};
use agilepm_platform::config::ServiceName;
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "agilepm",
    about = "agilepm: Scrum planning back end as gRPC microservices"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run all four services in this process, each on its own port and database.
    Dev(DevArgs),
    /// Benchmark the yardstick sprint at scale against the machine's own limits.
    Bench(agilepm::bench::BenchArgs),
    /// Exit 0 if the gRPC server at ADDRESS answers health SERVING (container health checks).
    Health {
        /// `host:port` of the server.
        #[arg(
            long,
            env = "AGILEPM_HEALTH_ADDRESS",
            default_value = "127.0.0.1:50051"
        )]
        address: std::net::SocketAddr,
    },
    /// Print a signed bearer token for a tenant (or `*` for internal services).
    Token {
        /// The tenant the token grants.
        #[arg(long)]
        tenant: String,
        /// The signing secret the services are started with.
        #[arg(long, env = "AGILEPM_AUTH_SECRET", hide_env_values = true)]
        secret: String,
    },
}

#[derive(Args)]
struct DevArgs {
    /// Directory holding one SQLite database per service.
    #[arg(long, env = "AGILEPM_DATA_DIR", default_value = "agilepm-data")]
    data_dir: PathBuf,
    /// Use PostgreSQL instead: a server URL; each service gets database `agilepm_<service>`
    /// on it, created if missing.
    #[arg(long, env = "AGILEPM_DEV_POSTGRES_URL")]
    postgres_url: Option<String>,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port of the backlog-item service.
    #[arg(long, default_value_t = ServiceName::BacklogItem.default_port())]
    backlog_item_port: u16,
    /// Port of the task service.
    #[arg(long, default_value_t = ServiceName::Task.default_port())]
    task_port: u16,
    /// Port of the planning service.
    #[arg(long, default_value_t = ServiceName::Planning.default_port())]
    planning_port: u16,
    /// Port of the coordinator.
    #[arg(long, default_value_t = ServiceName::Coordinator.default_port())]
    coordinator_port: u16,
    /// Token-signing secret; unset runs open (development mode).
    #[arg(long, env = "AGILEPM_AUTH_SECRET", hide_env_values = true)]
    auth_secret: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Dev(args) => dev(args).await,
        Command::Bench(args) => agilepm::bench::run(args).await,
        Command::Health { address } => {
            if agilepm::system::is_serving(address).await {
                println!("SERVING");
                Ok(())
            } else {
                anyhow::bail!("{address} is not SERVING")
            }
        }
        Command::Token { tenant, secret } => {
            println!("{}", agilepm_platform::auth::sign_token(&secret, &tenant));
            Ok(())
        }
    }
}

async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let _telemetry = agilepm_platform::telemetry::init("agilepm-dev")?;
    let mut databases = BTreeMap::new();
    for service in ServiceName::ALL {
        let url = match &args.postgres_url {
            Some(server) => {
                let database = format!("agilepm_{}", service.as_str().replace('-', "_"));
                ensure_database(server, &database).await?;
                with_database(server, &database)?
            }
            None => format!(
                "sqlite://{}/{}.db",
                args.data_dir.display(),
                service.as_str()
            ),
        };
        databases.insert(service.into(), url);
    }
    let ports = BTreeMap::from([
        (ServiceName::BacklogItem.into(), args.backlog_item_port),
        (ServiceName::Task.into(), args.task_port),
        (ServiceName::Planning.into(), args.planning_port),
        (ServiceName::Coordinator.into(), args.coordinator_port),
    ]);
    let config = SystemConfig {
        databases,
        host: args.host,
        ports,
        auth_secret: args.auth_secret.clone(),
        db_max_connections: 16,
        external_endpoints: BTreeMap::new(),
    };
    let mut system = RunningSystem::start(config).await?;
    system.wait_ready(Duration::from_secs(30)).await?;

    let storage = match &args.postgres_url {
        Some(url) => format!("PostgreSQL at {url}"),
        None => format!("SQLite under {}", args.data_dir.display()),
    };
    println!("agilepm dev: four services up, storage: {storage}");
    for (service, address) in system.services() {
        println!("  {:<13} {address}", service.as_str());
    }
    if args.auth_secret.is_none() {
        println!("authentication is OFF (development mode): the bearer token is the tenant id");
    }
    let planning = system
        .address(ServiceName::Planning)
        .map(|a| a.to_string())
        .unwrap_or_default();
    println!("try: grpcurl -plaintext {planning} list");
    println!("press Ctrl-C to stop");

    tokio::select! {
        () = agilepm_platform::server::shutdown_signal() => {}
        (service, outcome) = system.any_stopped() => {
            anyhow::bail!("{service} stopped unexpectedly: {outcome:?}");
        }
    }
    system.stop().await
}
