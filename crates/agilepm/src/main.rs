//! `agilepm`: run the whole system for development, or mint a token.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use agilepm::postgres::{ensure_database, with_database};
use agilepm::system::{RunningSystem, SystemConfig};
use agilepm_platform::wire::auth::identity::{parse_subject, parse_tenant};
use agilepm_platform::wire::auth::{Role, TokenSpec};
use agilepm_platform::wire::browser::BrowserArgs;
use agilepm_platform::wire::config::{AuthArgs, ServiceName, TlsArgs};
use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "agilepm",
    version = agilepm_platform::wire::config::VERSION,
    about = "agilepm: Scrum planning back end as gRPC microservices"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run all five services in this process, each on its own port and database.
    Dev(DevArgs),
    /// Benchmark the yardstick sprint at scale against the machine's own limits.
    Bench(agilepm::bench::BenchArgs),
    /// Exit 0 if the gRPC server at ADDRESS answers health SERVING (container health checks):
    /// readiness (database reachable, coordinator making progress), or with --liveness only
    /// that the process answers at all (what a restart could fix).
    /// A service given a TLS certificate (AGILEPM_TLS_CERT) is probed over TLS, verified
    /// with AGILEPM_TLS_CA and presenting the service's own certificate, so the probe runs
    /// in the service's container with the service's environment and nothing else.
    Health {
        /// `host:port` of the server.
        #[arg(
            long,
            env = "AGILEPM_HEALTH_ADDRESS",
            default_value = "127.0.0.1:50051"
        )]
        address: std::net::SocketAddr,
        /// Probe liveness instead of readiness.
        #[arg(long)]
        liveness: bool,
        /// The service's TLS settings.
        #[command(flatten)]
        tls: TlsArgs,
    },
    /// Print a signed bearer token (a JWT) for a person of a tenant, or a system operator.
    Token(TokenArgs),
    /// Print the NATS server's `authorization` block for the services' users: each may
    /// publish only its own stream's subjects (deploy/nats/authorization.conf).
    NatsAuthorization,
    /// Write a sprint's burndown chart to an SVG file, as the board draws it (for reports
    /// and e-mail).
    Burndown(BurndownArgs),
}

#[derive(Args)]
struct BurndownArgs {
    /// The sprint (UUID).
    #[arg(long)]
    sprint: String,
    /// Where to write the chart.
    #[arg(long)]
    svg: PathBuf,
    /// Where the planning service answers.
    #[arg(
        long,
        env = "AGILEPM_PLANNING_ENDPOINT",
        default_value = "http://127.0.0.1:50053"
    )]
    planning_endpoint: String,
    /// The bearer token to call with (in development mode, a tenant name).
    #[arg(long, env = "AGILEPM_TOKEN", hide_env_values = true)]
    token: String,
    /// TLS for an https:// endpoint (the CA that signed the server's certificate).
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(Args)]
struct TokenArgs {
    /// The tenant the person belongs to; omit only for a system operator.
    #[arg(long)]
    tenant: Option<String>,
    /// A role: product_owner, team_member, viewer, operator (repeat for several).
    #[arg(long = "role", required = true)]
    roles: Vec<String>,
    /// Who the token speaks for (shown as the actor of what they do).
    #[arg(long, default_value = "dev-user")]
    subject: String,
    /// How long the token is valid: `90s`, `15m`, `12h`, `7d`.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    ttl: Duration,
    /// The keys the services verify with (a shared secret, or a signing key and kid).
    #[command(flatten)]
    auth: AuthArgs,
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
    /// Port of the notifier.
    #[arg(long, default_value_t = ServiceName::Notifier.default_port())]
    notifier_port: u16,
    /// Port of the board (the sprint board and burndown in a browser).
    #[arg(long, default_value_t = 50050)]
    board_port: u16,
    /// More web origins allowed to call the services from a browser, beside the board's.
    #[command(flatten)]
    browser: BrowserArgs,
    /// Where Prometheus scrapes the services' metrics (`/metrics`).
    #[arg(
        long,
        env = "AGILEPM_METRICS_ADDRESS",
        default_value = "127.0.0.1:9464"
    )]
    metrics_address: SocketAddr,
    /// How callers are authenticated; no key runs open (development mode).
    #[command(flatten)]
    auth: AuthArgs,
    /// TLS for the servers and the calls between them; plaintext without a
    /// certificate.
    #[command(flatten)]
    tls: TlsArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    agilepm_platform::wire::tls::install_crypto_provider();
    match Cli::parse().command {
        Command::Dev(args) => dev(args).await,
        Command::Bench(args) => agilepm::bench::run(args).await,
        Command::NatsAuthorization => {
            print!("{}", agilepm::nats_authorization::authorization());
            Ok(())
        }
        Command::Health {
            address,
            liveness,
            tls,
        } => {
            let tls = tls.resolve()?;
            let service = if liveness {
                agilepm_platform::runtime::server::LIVENESS
            } else {
                ""
            };
            let serving = if tls.server.is_some() {
                let client = tls.client.config()?;
                let endpoint = format!("https://{address}");
                agilepm::system::answers_serving(&endpoint, Some(&client), service).await
            } else {
                let endpoint = format!("http://{address}");
                agilepm::system::answers_serving(&endpoint, None, service).await
            };
            if serving {
                println!("SERVING");
                Ok(())
            } else {
                anyhow::bail!("{address} is not SERVING")
            }
        }
        Command::Token(args) => {
            println!("{}", mint(&args)?);
            Ok(())
        }
        Command::Burndown(args) => burndown(args).await,
    }
}

/// Reads the sprint's burndown from planning and writes it as SVG.
async fn burndown(args: BurndownArgs) -> anyhow::Result<()> {
    use agilepm_proto::planning::v1::report_service_client::ReportServiceClient;
    use agilepm_proto::planning::v1::sprint_service_client::SprintServiceClient;
    use agilepm_proto::planning::v1::{GetSprintBurndownRequest, GetSprintRequest};
    let tls = args.tls.resolve()?.client.config_if_any()?;
    let credentials = agilepm_platform::wire::auth::Credentials::fixed(&args.token)
        .map_err(|e| anyhow::anyhow!("--token: {e}"))?;
    let channel = agilepm_platform::wire::client::connect_lazy_tls(
        &args.planning_endpoint,
        Some(credentials),
        tls.as_ref(),
    )?;
    let name = SprintServiceClient::new(channel.clone())
        .get_sprint(GetSprintRequest {
            id: args.sprint.clone(),
        })
        .await
        .map_err(|status| anyhow::anyhow!("GetSprint: {}", status.message()))?
        .into_inner()
        .sprint
        .map(|sprint| sprint.name)
        .unwrap_or_default();
    let burndown = ReportServiceClient::new(channel)
        .get_sprint_burndown(GetSprintBurndownRequest {
            sprint_id: args.sprint,
        })
        .await
        .map_err(|status| anyhow::anyhow!("GetSprintBurndown: {}", status.message()))?
        .into_inner();
    std::fs::write(&args.svg, agilepm::burndown_chart::svg(&burndown, &name))
        .with_context(|| format!("cannot write {}", args.svg.display()))?;
    println!(
        "{}: {} days, the team's today {} ({})",
        args.svg.display(),
        burndown.days.len(),
        burndown.today,
        burndown.time_zone
    );
    Ok(())
}

fn mint(args: &TokenArgs) -> anyhow::Result<String> {
    let auth = args.auth.resolve()?;
    anyhow::ensure!(
        !auth.development,
        "no key configured: set AGILEPM_AUTH_SECRET (or --auth-signing-key and --auth-signing-kid) \
         to the key the services verify with"
    );
    let roles = args
        .roles
        .iter()
        .map(|name| {
            Role::parse(name)
                .filter(|role| *role != Role::Service)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--role {name:?}: one of product_owner, team_member, viewer, operator"
                    )
                })
        })
        .collect::<anyhow::Result<Vec<Role>>>()?;
    let tenant = match &args.tenant {
        Some(tenant) => Some(parse_tenant(tenant).map_err(|e| anyhow::anyhow!("--tenant: {e}"))?),
        None if roles == [Role::Operator] => None,
        None => anyhow::bail!(
            "--tenant is required (only a token with the one role operator spans tenants)"
        ),
    };
    parse_subject(&args.subject).map_err(|e| anyhow::anyhow!("--subject: {e}"))?;
    let spec = TokenSpec {
        subject: args.subject.clone(),
        tenant,
        roles,
    };
    auth.signer()?.mint(&spec, args.ttl)
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected e.g. 15m, 12h, 7d"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit is s, m, h or d")),
    };
    let ttl = number.saturating_mul(seconds);
    if ttl == 0 || ttl > 366 * 86_400 {
        return Err(format!("{text:?}: between 1s and 366d"));
    }
    Ok(Duration::from_secs(ttl))
}

async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let telemetry =
        agilepm_platform::wire::telemetry::init("agilepm-dev", Some(args.metrics_address))?;
    let auth = args.auth.resolve()?;
    let tls = args.tls.resolve()?;
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
        (ServiceName::Notifier.into(), args.notifier_port),
    ]);
    // The board's port is bound first: its origin is the one the services let call.
    let board_listener = tokio::net::TcpListener::bind((args.host, args.board_port))
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}:{} for the board",
                args.host, args.board_port
            )
        })?;
    let board_address = board_listener.local_addr()?;
    let mut browser = args.browser.resolve()?;
    browser
        .allowed_origins
        .push(agilepm_platform::wire::browser::origin(
            &agilepm::board::origin(board_address),
        )?);
    let config = SystemConfig {
        databases,
        host: args.host,
        ports,
        auth: auth.clone(),
        tls: tls.clone(),
        db_max_connections: 16,
        nats: Default::default(),
        external_endpoints: BTreeMap::new(),
        browser,
    };
    let mut system = RunningSystem::start(config).await?;
    system.wait_ready(Duration::from_secs(30)).await?;
    let board_shutdown = tokio_util::sync::CancellationToken::new();
    let board = tokio::spawn(agilepm::board::serve(
        board_listener,
        agilepm::board::BoardConfig {
            endpoints: agilepm::board::Endpoints {
                backlog_item: system.endpoint(ServiceName::BacklogItem),
                task: system.endpoint(ServiceName::Task),
                planning: system.endpoint(ServiceName::Planning),
            },
            development: auth.development,
        },
        board_shutdown.clone(),
    ));

    let storage = match &args.postgres_url {
        Some(url) => format!(
            "PostgreSQL at {}",
            agilepm_platform::storage::db::redacted_url(url)
        ),
        None => format!("SQLite under {}", args.data_dir.display()),
    };
    println!(
        "agilepm dev: all {} services up, storage: {storage}",
        ServiceName::ALL.len()
    );
    for (service, address) in system.services() {
        println!("  {:<13} {address}", service.as_str());
    }
    if let Some(address) = telemetry.metrics_address() {
        println!("  {:<13} http://{address}/metrics", "metrics");
    }
    println!(
        "  {:<13} {}/",
        "board",
        agilepm::board::origin(board_address)
    );
    if auth.development {
        let operator = auth.signer()?.mint(
            &TokenSpec::system_operator("dev-operator"),
            Duration::from_secs(12 * 3600),
        )?;
        println!(
            "authentication is OPEN (development mode): a bearer token that is not a JWT is \
             taken, unverified, as a tenant id with the tenant roles"
        );
        println!("operator token for this run (12 h): {operator}");
    }
    let planning = system
        .address(ServiceName::Planning)
        .map(|a| a.to_string())
        .unwrap_or_default();
    match (&tls.server, &tls.client.ca) {
        (Some(_), Some(ca)) => println!("try: grpcurl -cacert {} {planning} list", ca.display()),
        (Some(_), None) => println!("try: grpcurl -cacert YOUR-CA.pem {planning} list"),
        (None, _) => println!("try: grpcurl -plaintext {planning} list"),
    }
    println!("press Ctrl-C to stop");

    tokio::select! {
        () = agilepm_platform::runtime::server::shutdown_signal() => {}
        (service, outcome) = system.any_stopped() => {
            anyhow::bail!("{service} stopped unexpectedly: {outcome:?}");
        }
    }
    board_shutdown.cancel();
    board.await??;
    system.stop().await
}
