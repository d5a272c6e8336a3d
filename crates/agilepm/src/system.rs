//! Starting and stopping a set of services in this process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use agilepm_platform::runtime::service::ServiceSpec;
use agilepm_platform::storage::db::Migrations;
use agilepm_platform::wire::auth::AuthConfig;
use agilepm_platform::wire::browser::BrowserAccess;
use agilepm_platform::wire::config::{CommonConfig, NatsConfig, Peers, ServiceName, TlsConfig};
use anyhow::Context as _;
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::ClientTlsConfig;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Runs one service's `run` function.
pub fn run_service(
    config: CommonConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> BoxFuture<'static, anyhow::Result<()>> {
    match config.service {
        ServiceName::BacklogItem => Box::pin(agilepm_backlog_item::run(config, listener, shutdown)),
        ServiceName::Task => Box::pin(agilepm_task::run(config, listener, shutdown)),
        ServiceName::Planning => Box::pin(agilepm_planning::run(config, listener, shutdown)),
        ServiceName::Coordinator => Box::pin(agilepm_coordinator::run(config, listener, shutdown)),
        ServiceName::Notifier => Box::pin(agilepm_notifier::run(config, listener, shutdown)),
    }
}

/// What `service` is: its migrations, whether it serves a feed.
pub fn spec(service: ServiceName) -> &'static ServiceSpec {
    match service {
        ServiceName::BacklogItem => &agilepm_backlog_item::SPEC,
        ServiceName::Task => &agilepm_task::SPEC,
        ServiceName::Planning => &agilepm_planning::SPEC,
        ServiceName::Coordinator => &agilepm_coordinator::SPEC,
        ServiceName::Notifier => &agilepm_notifier::SPEC,
    }
}

/// The migrations of `service`'s database.
pub fn migrations(service: ServiceName) -> &'static Migrations {
    spec(service).migrations
}

/// What to start.
#[derive(Debug, Clone)]
pub struct SystemConfig {
    /// The services to run, each with its database URL.
    pub databases: BTreeMap<ServiceNameKey, String>,
    /// Host to bind, e.g. `127.0.0.1`.
    pub host: std::net::IpAddr,
    /// Port per service; 0 (or absent) binds an ephemeral port.
    pub ports: BTreeMap<ServiceNameKey, u16>,
    /// How every service started here authenticates (one configuration, so that in
    /// development mode they share the random secret they prove their identities with).
    pub auth: AuthConfig,
    /// TLS for every service started here (plaintext when it has no server certificate).
    pub tls: TlsConfig,
    /// Connection pool ceiling per service.
    pub db_max_connections: u32,
    /// Endpoints of services not started here (e.g. a stand-in in a test).
    pub external_endpoints: BTreeMap<ServiceNameKey, String>,
    /// NATS JetStream for every service started here (unused without a URL).
    pub nats: NatsConfig,
    /// Which web origins may call the services from a browser (gRPC-Web).
    pub browser: BrowserAccess,
}

/// [`ServiceName`] in a sortable wrapper, so maps list services in start-up order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceNameKey(u8);

impl From<ServiceName> for ServiceNameKey {
    fn from(name: ServiceName) -> Self {
        ServiceNameKey(
            ServiceName::ALL
                .iter()
                .position(|n| *n == name)
                .unwrap_or(0) as u8,
        )
    }
}

impl ServiceNameKey {
    /// The service.
    pub fn name(self) -> ServiceName {
        ServiceName::ALL[usize::from(self.0)]
    }
}

/// Services running in this process.
pub struct RunningSystem {
    addresses: BTreeMap<ServiceNameKey, SocketAddr>,
    /// `http` or `https`.
    scheme: &'static str,
    /// How this process's own health checks reach TLS servers.
    client_tls: Option<ClientTlsConfig>,
    shutdown: CancellationToken,
    tasks: Vec<(ServiceName, JoinHandle<anyhow::Result<()>>)>,
}

impl RunningSystem {
    /// Binds every listener first (so each service knows where its peers are), then starts
    /// the services.
    pub async fn start(config: SystemConfig) -> anyhow::Result<RunningSystem> {
        let mut listeners = BTreeMap::new();
        for key in config.databases.keys() {
            let port = config.ports.get(key).copied().unwrap_or(0);
            let listener = TcpListener::bind((config.host, port))
                .await
                .with_context(|| {
                    format!("cannot listen on {}:{port} for {}", config.host, key.name())
                })?;
            listeners.insert(*key, listener);
        }
        let mut addresses = BTreeMap::new();
        for (key, listener) in &listeners {
            addresses.insert(*key, listener.local_addr()?);
        }
        let scheme = if config.tls.server.is_some() {
            "https"
        } else {
            "http"
        };
        let endpoint = |name: ServiceName| -> String {
            match (
                addresses.get(&name.into()),
                config.external_endpoints.get(&name.into()),
            ) {
                (Some(address), _) => format!("{scheme}://{address}"),
                (None, Some(endpoint)) => endpoint.clone(),
                (None, None) => name.default_endpoint(),
            }
        };
        let peers = Peers {
            backlog_item: endpoint(ServiceName::BacklogItem),
            task: endpoint(ServiceName::Task),
            planning: endpoint(ServiceName::Planning),
        };
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        for (key, listener) in listeners {
            let name = key.name();
            let config = CommonConfig {
                service: name,
                listen: addresses[&key],
                database_url: config.databases[&key].clone(),
                auth: config.auth.clone(),
                tls: config.tls.clone(),
                limits: agilepm_platform::wire::limits::ServerLimits::default(),
                browser: config.browser.clone(),
                retention: Default::default(),
                nats: config.nats.clone(),
                db_max_connections: config.db_max_connections,
                peers: peers.clone(),
            };
            let task = tokio::spawn(run_service(config, listener, shutdown.child_token()));
            tasks.push((name, task));
        }
        let client_tls = config.tls.client.config_if_any()?;
        Ok(RunningSystem {
            addresses,
            scheme,
            client_tls,
            shutdown,
            tasks,
        })
    }

    /// Where `service` listens.
    pub fn address(&self, service: ServiceName) -> Option<SocketAddr> {
        self.addresses.get(&service.into()).copied()
    }

    /// `http://ADDRESS` (or `https://`) of `service`.
    pub fn endpoint(&self, service: ServiceName) -> String {
        self.address(service)
            .map(|a| format!("{}://{a}", self.scheme))
            .unwrap_or_else(|| service.default_endpoint())
    }

    /// The services running, in start-up order.
    pub fn services(&self) -> impl Iterator<Item = (ServiceName, SocketAddr)> + '_ {
        self.addresses
            .iter()
            .map(|(key, address)| (key.name(), *address))
    }

    /// Waits until every service answers health `SERVING`, failing if one stops first or
    /// `timeout` passes.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        for (name, address) in self.services().collect::<Vec<_>>() {
            let endpoint = self.endpoint(name);
            loop {
                if let Some((_, task)) = self.tasks.iter_mut().find(|(n, _)| *n == name)
                    && task.is_finished()
                {
                    let outcome = task.await;
                    anyhow::bail!("{name} stopped during start-up: {outcome:?}");
                }
                if is_serving_at(&endpoint, self.client_tls.as_ref()).await {
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    anyhow::bail!("{name} on {address} was not SERVING within {timeout:?}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// Resolves when any service stops (which, before shutdown, is a failure).
    pub async fn any_stopped(&mut self) -> (ServiceName, anyhow::Result<()>) {
        let futures = self.tasks.iter_mut().map(|(name, task)| {
            let name = *name;
            Box::pin(async move {
                let outcome = match task.await {
                    Ok(result) => result,
                    Err(join_error) => Err(anyhow::anyhow!("{name} panicked: {join_error}")),
                };
                (name, outcome)
            })
        });
        futures::future::select_all(futures).await.0
    }

    /// Stops every service gracefully and waits for them.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let mut first_error = None;
        for (name, task) in self.tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    first_error.get_or_insert(error.context(format!("{name} failed")));
                }
                Err(join_error) => {
                    first_error.get_or_insert(anyhow::anyhow!("{name} panicked: {join_error}"));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Whether the plaintext server at `address` answers health `SERVING`.
pub async fn is_serving(address: SocketAddr) -> bool {
    is_serving_at(&format!("http://{address}"), None).await
}

/// Whether the server at `endpoint` (`http://` or `https://`) answers health `SERVING`
/// (readiness).
pub async fn is_serving_at(endpoint: &str, tls: Option<&ClientTlsConfig>) -> bool {
    answers_serving(endpoint, tls, "").await
}

/// Whether the server at `endpoint` answers health `SERVING` for `service` (empty:
/// readiness; [`LIVENESS`](agilepm_platform::runtime::server::LIVENESS): liveness).
pub async fn answers_serving(endpoint: &str, tls: Option<&ClientTlsConfig>, service: &str) -> bool {
    let Ok(mut channel) = tonic::transport::Endpoint::from_shared(endpoint.to_owned()) else {
        return false;
    };
    if endpoint.starts_with("https://") {
        let Ok(with_tls) = channel.tls_config(tls.cloned().unwrap_or_default()) else {
            return false;
        };
        channel = with_tls;
    }
    let Ok(channel) = channel
        .connect_timeout(Duration::from_millis(200))
        .connect()
        .await
    else {
        return false;
    };
    let mut client = HealthClient::new(channel);
    matches!(
        client.check(HealthCheckRequest { service: service.to_owned() }).await,
        Ok(response) if response.get_ref().status == ServingStatus::Serving as i32
    )
}
