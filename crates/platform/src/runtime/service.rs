//! The life of a service process, written once: open the database and migrate it, set up
//! authentication and the event feed, let the service add its gRPC services, serve until
//! shutdown.

use std::future::Future;
use std::time::Duration;

use agilepm_proto::events::v1::event_feed_service_server::EventFeedServiceServer;
use clap::Parser;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::events::feed::{EventFeed, FeedOptions};
use crate::runtime::server::GrpcServer;
use crate::storage::db::{Db, Migrations};
use crate::wire::auth::Credentials;
use crate::wire::client::{PeerChannel, connect_lazy_tls};
use crate::wire::config::{CommonArgs, CommonConfig, ServiceName};
use crate::wire::tls::ServerTls;
use tonic::transport::ClientTlsConfig;

/// What a service hands its gRPC adapters.
#[derive(Clone)]
pub struct ServiceContext {
    /// Resolved configuration.
    pub config: CommonConfig,
    /// The service's own database.
    pub db: Db,
    /// What this service presents to its peers: its own identity, renewed as it expires.
    pub credentials: Credentials,
    /// TLS for calls to `https://` peers.
    pub client_tls: Option<ClientTlsConfig>,
    /// Cancelled when the process shuts down.
    pub shutdown: CancellationToken,
    /// Background work that ends on `shutdown` but still needs the database to finish
    /// (e.g. releasing a lease): the database closes only after it has.
    pub tasks: TaskTracker,
}

impl ServiceContext {
    /// A lazily connected channel to the peer at `endpoint`, presenting this service's
    /// identity (and its client certificate, for an `https://` peer that asks for one).
    pub fn connect(&self, endpoint: &str) -> anyhow::Result<PeerChannel> {
        connect_lazy_tls(
            endpoint,
            Some(self.credentials.clone()),
            self.client_tls.as_ref(),
        )
    }
}

/// How long background work may take to finish after shutdown before the database is
/// closed under it.
const BACKGROUND_GRACE: Duration = Duration::from_secs(5);

/// How long closing the database may wait for its connections to come back.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What distinguishes one service's start-up from another's.
pub struct ServiceSpec {
    /// Which service.
    pub name: ServiceName,
    /// Its migrations.
    pub migrations: &'static Migrations,
    /// Whether it serves its outbox as an event feed.
    pub serves_feed: bool,
}

/// Runs a service on `listener` until `shutdown`: `add_services` registers its domain
/// services on the server.
pub async fn run<F, Fut>(
    spec: &ServiceSpec,
    config: CommonConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
    add_services: F,
) -> anyhow::Result<()>
where
    F: FnOnce(ServiceContext, GrpcServer) -> Fut,
    Fut: Future<Output = anyhow::Result<GrpcServer>>,
{
    let db = Db::connect(
        &config.database_url,
        spec.name,
        config.db_max_connections,
        spec.migrations,
    )
    .await?;
    measure_pool(spec.name, db.pool().clone(), config.db_max_connections);
    let authenticator = config.auth.authenticator(&shutdown)?;
    if authenticator.is_development_mode() {
        tracing::warn!(
            service = %spec.name,
            "AUTHENTICATION IS OPEN (development mode): a bearer token that is not a JWT is \
             taken, unverified, as a tenant id with the tenant roles. Set AGILEPM_AUTH_SECRET \
             or AGILEPM_AUTH_JWKS in production."
        );
    }
    let server_tls = match &config.tls.server {
        Some(files) => Some(ServerTls::load(files, &shutdown)?),
        None => None,
    };
    let client_tls = config.tls.client.config_if_any()?;
    let limits = config.limits;
    let context = ServiceContext {
        credentials: config.auth.service_credentials(spec.name)?,
        client_tls,
        config,
        db: db.clone(),
        shutdown: shutdown.clone(),
        tasks: TaskTracker::new(),
    };
    let tasks = context.tasks.clone();
    let mut server = GrpcServer::new(authenticator)
        .with_tls(server_tls)
        .with_limits(limits)
        .with_browser(context.config.browser.clone());
    context.tasks.spawn(crate::storage::idempotency::sweep(
        db.clone(),
        spec.name.as_str(),
        shutdown.clone(),
    ));
    if spec.serves_feed {
        let options = FeedOptions {
            max_subscribers: limits.max_subscribers,
            max_subscribers_per_tenant: limits.max_subscribers_per_tenant,
            unavailable_after: limits.feed_unavailable_after,
            service: spec.name.as_str(),
            ..FeedOptions::default()
        };
        let feed = EventFeed::new(db.clone(), options, shutdown.clone()).await?;
        context.tasks.spawn(crate::events::feed::retention::run(
            db.clone(),
            context.config.retention,
            spec.name.as_str(),
            shutdown.clone(),
        ));
        if context.config.nats.url.is_some() {
            context.tasks.spawn(crate::events::jetstream::relay::run(
                feed.hub().clone(),
                db.clone(),
                spec.name,
                context.config.nats.clone(),
                shutdown.clone(),
            ));
        }
        server = server.add_service(EventFeedServiceServer::new(feed));
    }
    let server = add_services(context, server).await?;
    let result = server.serve(listener, Some(db.clone()), shutdown).await;
    tasks.close();
    if tokio::time::timeout(BACKGROUND_GRACE, tasks.wait())
        .await
        .is_err()
    {
        tracing::error!(
            service = %spec.name,
            "background work did not finish within {BACKGROUND_GRACE:?} of shutdown; closing the database under it"
        );
    }
    // Closing waits for every connection to come back; one a call stuck on an
    // unresponsive database holds never does, and must not keep the process alive.
    if tokio::time::timeout(CLOSE_GRACE, db.close()).await.is_err() {
        tracing::warn!(
            service = %spec.name,
            "database connections still in use {CLOSE_GRACE:?} after shutdown; exiting with them open"
        );
    }
    result
}

/// Reports the service's connection pool to metrics: `agilepm.db.pool.connections` by
/// state (`in_use`, `idle`) and `agilepm.db.pool.max_connections`. A pool whose every
/// connection is in use makes calls wait for one.
fn measure_pool(service: ServiceName, pool: sqlx::AnyPool, max_connections: u32) {
    use opentelemetry::KeyValue;
    let meter = crate::wire::metrics::meter();
    let label = KeyValue::new("service", service.as_str());
    let labels = [label.clone()];
    meter
        .i64_observable_gauge("agilepm.db.pool.max_connections")
        .with_description("Connections the service's database pool may open")
        .with_callback(move |observer| observer.observe(i64::from(max_connections), &labels))
        .build();
    meter
        .i64_observable_gauge("agilepm.db.pool.connections")
        .with_description("Connections of the service's database pool, by state")
        .with_callback(move |observer| {
            // A pool closed at shutdown is no longer reported.
            if pool.is_closed() {
                return;
            }
            let open = i64::from(pool.size());
            let idle = pool.num_idle() as i64;
            observer.observe(
                open - idle,
                &[label.clone(), KeyValue::new("state", "in_use")],
            );
            observer.observe(idle, &[label.clone(), KeyValue::new("state", "idle")]);
        })
        .build();
}

/// The `main` of a service binary: parse flags, set up telemetry, bind, run until SIGTERM.
pub async fn main<R, Fut>(name: ServiceName, run_service: R) -> anyhow::Result<()>
where
    R: FnOnce(CommonConfig, TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    /// An agilepm service. Every setting is a flag or an environment variable.
    #[derive(Parser)]
    #[command(version = crate::wire::config::VERSION)]
    struct Cli {
        #[command(flatten)]
        common: CommonArgs,
    }
    // Named after the binary (`agilepm-task`), for --help and --version; once per
    // process, so the name may live as long as it.
    let binary: &'static str = Box::leak(format!("agilepm-{name}").into_boxed_str());
    let matches = <Cli as clap::CommandFactory>::command()
        .name(binary)
        .bin_name(binary)
        .get_matches();
    let cli = <Cli as clap::FromArgMatches>::from_arg_matches(&matches)?;
    let _telemetry =
        crate::wire::telemetry::init(&format!("agilepm-{name}"), cli.common.metrics_address)?;
    let config = cli.common.resolve(name)?;
    let listener = TcpListener::bind(config.listen).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            crate::runtime::server::shutdown_signal().await;
            shutdown.cancel();
        }
    });
    run_service(config, listener, shutdown)
        .await
        .inspect_err(|error| {
            tracing::error!(error = %format!("{error:#}"), "service failed");
        })
}
