//! Test kit: every test gets its own databases and its own service processes-in-miniature
//! (real servers on ephemeral loopback ports, real gRPC), so tests run in parallel without
//! sharing state.
//!
//! PostgreSQL tests run when `AGILEPM_TEST_POSTGRES_URL` names a server (each test creates
//! and drops its own database there). Without it they print that they were skipped —
//! unless `AGILEPM_REQUIRE_POSTGRES=1`, as in CI, where a missing server fails the test.

pub mod metrics;
/// The webhook receiver the notifier's tests deliver to (shared with the benchmark).
pub use agilepm::webhook_receiver as webhook;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use agilepm::system::{RunningSystem, SystemConfig};
use agilepm_platform::events::feed::{EventFeed, FeedOptions};
use agilepm_platform::runtime::server::GrpcServer;
pub use agilepm_platform::storage::db::Engine;
use agilepm_platform::storage::db::{Db, Migrations, NO_MIGRATIONS};
use agilepm_platform::wire::auth::{AuthConfig, Credentials, Role, TokenSpec};
use agilepm_platform::wire::client::{PeerChannel, connect_lazy};
use agilepm_platform::wire::config::{NatsConfig, ServiceName, TlsConfig};
use agilepm_proto::events::v1::event_feed_service_client::EventFeedServiceClient;
use agilepm_proto::events::v1::{Event, SubscribeRequest, subscribe_response};
use futures::StreamExt as _;
use sqlx::Connection as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Connections per pool in tests. A service holds about six on PostgreSQL (this pool,
/// the event feed's two, its LISTEN connection, the readiness probe's), so a test with
/// four or five services holds 24 to 30. Four still gives every concurrency test
/// overlapping transactions.
const TEST_POOL_SIZE: u32 = 4;

/// PostgreSQL tests running at once. The server here allows 100 connections; three
/// tests hold at most ~90 of them (see [`TEST_POOL_SIZE`]). The other test threads run
/// SQLite tests meanwhile.
const POSTGRES_TESTS_AT_ONCE: usize = 3;

/// A place among the [`POSTGRES_TESTS_AT_ONCE`] PostgreSQL tests, held for the whole
/// test. One permit per test, so no test waits for a place while holding one.
pub async fn postgres_slot() -> tokio::sync::SemaphorePermit<'static> {
    static SLOTS: tokio::sync::Semaphore =
        tokio::sync::Semaphore::const_new(POSTGRES_TESTS_AT_ONCE);
    SLOTS.acquire().await.expect("the slots are never closed")
}

/// Runs an `async fn name(engine: Engine)` test on SQLite and on PostgreSQL, as
/// `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! engine_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    $crate::init();
                    super::$name($crate::Engine::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    $crate::init();
                    if $crate::postgres_admin_url().is_some() {
                        let _slot = $crate::postgres_slot().await;
                        super::$name($crate::Engine::Postgres).await;
                    }
                }
            }
        )*
    };
}

/// Sets up test logging once.
pub fn init() {
    agilepm_platform::wire::telemetry::init_for_tests();
}

/// The PostgreSQL server tests may create databases on, if any. Without an `sslmode` of
/// its own the URL gets `sslmode=disable`: the server is on loopback, and negotiating TLS
/// costs each new connection ~100 ms here, which made connecting most of a PostgreSQL
/// test's time.
pub fn postgres_admin_url() -> Option<String> {
    match std::env::var("AGILEPM_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() && !url.contains("sslmode=") => {
            let separator = if url.contains('?') { '&' } else { '?' };
            Some(format!("{url}{separator}sslmode=disable"))
        }
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let required = std::env::var("AGILEPM_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "AGILEPM_REQUIRE_POSTGRES=1 but AGILEPM_TEST_POSTGRES_URL is not set"
            );
            eprintln!("SKIPPED on PostgreSQL: set AGILEPM_TEST_POSTGRES_URL to run it");
            None
        }
    }
}

/// A fresh, empty database that disappears with the value.
pub struct TestDb {
    url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Directory(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin_url: String, database: String },
}

impl TestDb {
    /// A new database on `engine` holding `migrations`' schema. On PostgreSQL it is a
    /// copy of a template migrated once per schema ([`Migrations::fingerprint`]), which
    /// takes a fraction of migrating it; connecting with `migrations` then finds every
    /// migration applied. On SQLite it is empty (migrating a file there is quick).
    pub async fn migrated(engine: Engine, migrations: &'static Migrations) -> TestDb {
        let Engine::Postgres = engine else {
            return TestDb::create(engine).await;
        };
        let admin_url =
            postgres_admin_url().expect("PostgreSQL tests need AGILEPM_TEST_POSTGRES_URL");
        let template = template(&admin_url, migrations)
            .await
            .expect("the migrated template database");
        let database = format!("agilepm_test_{}", uuid::Uuid::new_v4().simple());
        copy_database(&admin_url, &template, &database)
            .await
            .expect("copy the template database");
        let url = agilepm::postgres::with_database(&admin_url, &database).expect("URL");
        TestDb {
            url,
            cleanup: Cleanup::Postgres {
                admin_url,
                database,
            },
        }
    }

    /// A new, empty database on `engine`.
    pub async fn create(engine: Engine) -> TestDb {
        match engine {
            Engine::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let url = format!("sqlite://{}/test.db", dir.path().display());
                TestDb {
                    url,
                    cleanup: Cleanup::Directory(dir),
                }
            }
            Engine::Postgres => {
                let admin_url =
                    postgres_admin_url().expect("PostgreSQL tests need AGILEPM_TEST_POSTGRES_URL");
                let database = format!("agilepm_test_{}", uuid::Uuid::new_v4().simple());
                agilepm::postgres::ensure_database(&admin_url, &database)
                    .await
                    .expect("create the test database");
                let url = agilepm::postgres::with_database(&admin_url, &database).expect("URL");
                TestDb {
                    url,
                    cleanup: Cleanup::Postgres {
                        admin_url,
                        database,
                    },
                }
            }
        }
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Opens it with the platform's migrations only (outbox, checkpoints).
    pub async fn connect_platform(&self) -> Db {
        self.connect(&NO_MIGRATIONS).await
    }

    /// Opens it with `migrations`.
    pub async fn connect(&self, migrations: &Migrations) -> Db {
        Db::connect(&self.url, ServiceName::Task, TEST_POOL_SIZE, migrations)
            .await
            .expect("open the test database")
    }
}

/// The name of the template database holding `migrations`' schema, made on first use:
/// migrated under a name of its own, then renamed, so that no test (in this process or
/// another) copies it half-migrated.
async fn template(admin_url: &str, migrations: &'static Migrations) -> anyhow::Result<String> {
    static MADE: std::sync::Mutex<BTreeMap<String, std::sync::Arc<tokio::sync::OnceCell<()>>>> =
        std::sync::Mutex::new(BTreeMap::new());
    let name = format!(
        "agilepm_template_{}",
        migrations.fingerprint(Engine::Postgres)
    );
    let made = MADE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(name.clone())
        .or_default()
        .clone();
    made.get_or_try_init(|| async {
        let mut admin = sqlx::postgres::PgConnection::connect(admin_url).await?;
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
                .bind(&name)
                .fetch_optional(&mut admin)
                .await?;
        if exists.is_some() {
            return Ok(());
        }
        let building = format!("agilepm_building_{}", uuid::Uuid::new_v4().simple());
        agilepm::postgres::ensure_database(admin_url, &building).await?;
        let url = agilepm::postgres::with_database(admin_url, &building)?;
        let db = Db::connect(&url, ServiceName::Task, 1, migrations).await?;
        db.close().await;
        drop(db);
        let rename = format!("ALTER DATABASE \"{building}\" RENAME TO \"{name}\"");
        match sqlx::query(sqlx::AssertSqlSafe(rename))
            .execute(&mut admin)
            .await
        {
            Ok(_) => Ok(()),
            // Another process made the same template meanwhile: use theirs.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {
                agilepm::postgres::drop_database(admin_url, &building).await
            }
            Err(e) => Err(e.into()),
        }
    })
    .await?;
    Ok(name)
}

/// Creates `database` as a copy of `template`, with a feed id of its own: the migration
/// that made the template drew one at random, and every copy would otherwise share it,
/// so a position from another database's feed would no longer be refused.
async fn copy_database(admin_url: &str, template: &str, database: &str) -> anyhow::Result<()> {
    let mut admin = sqlx::postgres::PgConnection::connect(admin_url).await?;
    let create = format!("CREATE DATABASE \"{database}\" TEMPLATE \"{template}\"");
    sqlx::query(sqlx::AssertSqlSafe(create))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    let url = agilepm::postgres::with_database(admin_url, database)?;
    let mut copy = sqlx::postgres::PgConnection::connect(&url).await?;
    sqlx::query("UPDATE feed_identity SET feed_id = substr(md5(random()::text), 1, 12)")
        .execute(&mut copy)
        .await?;
    copy.close().await?;
    Ok(())
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Cleanup::Postgres {
            admin_url,
            database,
        } = &self.cleanup
        {
            let (admin_url, database) = (admin_url.clone(), database.clone());
            // Drop runs inside the test's runtime, which cannot be blocked on; a helper
            // thread with its own runtime drops the database, and we wait for it.
            let dropper = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(runtime) = runtime {
                    let _ =
                        runtime.block_on(agilepm::postgres::drop_database(&admin_url, &database));
                }
            });
            let _ = dropper.join();
        }
    }
}

/// A new backlog item of `product_id`, planned through `backlog_items` (as whoever the
/// channel presents).
pub async fn plan_item(
    backlog_items: PeerChannel,
    product_id: &str,
) -> agilepm_proto::backlog::v1::BacklogItem {
    use agilepm_proto::backlog::v1::PlanBacklogItemRequest;
    use agilepm_proto::backlog::v1::backlog_item_service_client::BacklogItemServiceClient;
    BacklogItemServiceClient::new(backlog_items)
        .plan_backlog_item(PlanBacklogItemRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            product_id: product_id.into(),
            summary: "Story".into(),
            ..Default::default()
        })
        .await
        .expect("plan the item")
        .into_inner()
        .backlog_item
        .expect("an item")
}

/// The authentication every test system of this process runs with: development mode
/// (a plain tenant id is a token with the tenant roles) and one random secret, with which
/// [`token`] mints the identities development mode does not grant (operators, services,
/// persons holding fewer roles).
pub fn test_auth() -> &'static AuthConfig {
    static AUTH: std::sync::OnceLock<AuthConfig> = std::sync::OnceLock::new();
    AUTH.get_or_init(AuthConfig::development)
}

/// The secret every test system of this process verifies and signs with, for services
/// started as processes of their own (`AGILEPM_AUTH_SECRET`).
pub fn test_secret() -> &'static str {
    secrecy::ExposeSecret::expose_secret(test_auth().secret.as_ref().expect("test secret"))
}

/// A token for `spec`, valid for an hour, verified by every test system of this process.
pub fn token(spec: &TokenSpec) -> String {
    test_auth()
        .signer()
        .and_then(|signer| signer.mint(spec, Duration::from_secs(3600)))
        .expect("mint a test token")
}

/// A system operator's token (every tenant, operator role only).
pub fn operator_token() -> String {
    token(&TokenSpec::system_operator("test-operator"))
}

/// `service`'s own identity token, as its peers see it.
pub fn service_token(service: ServiceName) -> String {
    token(&TokenSpec::service(service))
}

/// A token for person `subject` of `tenant` holding only `roles`.
pub fn person_token(subject: &str, tenant: &str, roles: &[Role]) -> String {
    token(&TokenSpec::person(subject, tenant, roles))
}

/// A client channel to `address` presenting `token` (a JWT, or in development mode a
/// plain tenant id).
pub fn channel(address: SocketAddr, token: &str) -> PeerChannel {
    connect_lazy(
        &format!("http://{address}"),
        Some(Credentials::fixed(token).expect("ASCII token")),
    )
    .expect("valid endpoint")
}

/// Where test systems listen unless a test needs other hosts to reach them.
const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// Some of the real services, each on its own fresh database and ephemeral port.
pub struct TestSystem {
    system: Option<RunningSystem>,
    services: Vec<ServiceName>,
    databases: Vec<TestDb>,
}

impl TestSystem {
    /// Starts `services` on `engine` and waits until they answer health checks.
    pub async fn start(engine: Engine, services: &[ServiceName]) -> TestSystem {
        TestSystem::start_with(engine, services, &[]).await
    }

    /// Like [`TestSystem::start`], with peers not started here found at `external`.
    pub async fn start_with(
        engine: Engine,
        services: &[ServiceName],
        external: &[(ServiceName, String)],
    ) -> TestSystem {
        TestSystem::start_with_auth(engine, services, external, test_auth().clone()).await
    }

    /// Like [`TestSystem::start_with`], authenticating with `auth`.
    pub async fn start_with_auth(
        engine: Engine,
        services: &[ServiceName],
        external: &[(ServiceName, String)],
        auth: AuthConfig,
    ) -> TestSystem {
        TestSystem::start_secured(engine, services, external, auth, TlsConfig::default()).await
    }

    /// `services`, each on the database URL given (which the caller owns and cleans up).
    pub async fn start_on_databases(services: &[(ServiceName, String)]) -> TestSystem {
        let urls = services
            .iter()
            .map(|(service, url)| ((*service).into(), url.clone()))
            .collect();
        let system = run(
            urls,
            &[],
            test_auth().clone(),
            TlsConfig::default(),
            NatsConfig::default(),
            LOOPBACK,
        )
        .await;
        TestSystem {
            system: Some(system),
            services: Vec::new(),
            databases: Vec::new(),
        }
    }

    /// Like [`TestSystem::start_with`], relaying outboxes to (and reading from) the
    /// JetStream of `nats`.
    pub async fn start_with_nats(
        engine: Engine,
        services: &[ServiceName],
        external: &[(ServiceName, String)],
        nats: NatsConfig,
    ) -> TestSystem {
        TestSystem::start_configured(
            engine,
            services,
            external,
            test_auth().clone(),
            TlsConfig::default(),
            nats,
            LOOPBACK,
        )
        .await
    }

    /// Like [`TestSystem::start_with_nats`], listening on every interface: for processes
    /// in other network namespaces (test "hosts") that reach the services over a veth.
    pub async fn start_exposed(
        engine: Engine,
        services: &[ServiceName],
        nats: NatsConfig,
    ) -> TestSystem {
        TestSystem::start_configured(
            engine,
            services,
            &[],
            test_auth().clone(),
            TlsConfig::default(),
            nats,
            [0, 0, 0, 0].into(),
        )
        .await
    }

    /// Like [`TestSystem::start_with_auth`], serving and calling peers with `tls`.
    pub async fn start_secured(
        engine: Engine,
        services: &[ServiceName],
        external: &[(ServiceName, String)],
        auth: AuthConfig,
        tls: TlsConfig,
    ) -> TestSystem {
        TestSystem::start_configured(
            engine,
            services,
            external,
            auth,
            tls,
            NatsConfig::default(),
            LOOPBACK,
        )
        .await
    }

    async fn start_configured(
        engine: Engine,
        services: &[ServiceName],
        external: &[(ServiceName, String)],
        auth: AuthConfig,
        tls: TlsConfig,
        nats: NatsConfig,
        host: std::net::IpAddr,
    ) -> TestSystem {
        // Created side by side: each copy is a round trip the others need not wait for.
        let databases = futures::future::join_all(
            services
                .iter()
                .map(|service| TestDb::migrated(engine, agilepm::system::migrations(*service))),
        )
        .await;
        let urls = services
            .iter()
            .zip(&databases)
            .map(|(service, database)| ((*service).into(), database.url().to_owned()))
            .collect();
        TestSystem {
            system: Some(run(urls, external, auth, tls, nats, host).await),
            services: services.to_vec(),
            databases,
        }
    }

    /// The URL of `service`'s database.
    pub fn database_url(&self, service: ServiceName) -> String {
        let index = self
            .services
            .iter()
            .position(|s| *s == service)
            .expect("service is running");
        self.databases[index].url().to_owned()
    }

    /// Opens `service`'s database directly (for checks against its tables).
    pub async fn database(&self, service: ServiceName) -> sqlx::AnyPool {
        let index = self
            .services
            .iter()
            .position(|s| *s == service)
            .expect("service is running");
        sqlx::any::install_default_drivers();
        sqlx::AnyPool::connect(self.databases[index].url())
            .await
            .expect("open the service database")
    }

    /// Where `service` listens.
    pub fn address(&self, service: ServiceName) -> SocketAddr {
        self.system
            .as_ref()
            .and_then(|s| s.address(service))
            .expect("service is running")
    }

    /// A channel to `service` acting as `tenant`.
    pub fn channel(&self, service: ServiceName, tenant: &str) -> PeerChannel {
        channel(self.address(service), tenant)
    }

    /// A channel to `service` as our service `identity`, acting for `tenant`: how a test
    /// plays a peer calling an internal RPC.
    pub fn channel_as_service(
        &self,
        service: ServiceName,
        identity: ServiceName,
        tenant: &str,
    ) -> PeerChannel {
        agilepm_platform::wire::client::connect_lazy_acting_for(
            &format!("http://{}", self.address(service)),
            Credentials::fixed(&service_token(identity)).expect("ASCII token"),
            tenant,
        )
        .expect("valid endpoint")
    }

    /// Records `product_id` for `tenant` in the backlog-item service, as the planning
    /// service does when a product is created: for tests that run backlog-item without
    /// planning.
    pub async fn record_product(&self, tenant: &str, product_id: &str) {
        use agilepm_proto::backlog::v1::backlog_item_service_client::BacklogItemServiceClient;
        use agilepm_proto::backlog::v1::{ProductFacts, SyncProductsRequest};
        BacklogItemServiceClient::new(self.channel_as_service(
            ServiceName::BacklogItem,
            ServiceName::Planning,
            tenant,
        ))
        .sync_products(SyncProductsRequest {
            products: vec![ProductFacts {
                product_id: product_id.to_owned(),
                status_transition_mode: 1,
                product_version: 1,
            }],
        })
        .await
        .expect("record the product");
    }

    /// A new backlog item of `tenant`, planned on this system's backlog-item service as the
    /// planning service plans one, for a product recorded for it first.
    pub async fn planned_item(&self, tenant: &str) -> agilepm_proto::backlog::v1::BacklogItem {
        let product_id = uuid::Uuid::now_v7().to_string();
        self.record_product(tenant, &product_id).await;
        let planning =
            self.channel_as_service(ServiceName::BacklogItem, ServiceName::Planning, tenant);
        plan_item(planning, &product_id).await
    }

    /// Stops the services gracefully, failing the test if one of them failed.
    pub async fn stop(mut self) {
        if let Some(system) = self.system.take() {
            system.stop().await.expect("services stop cleanly");
        }
    }
}

/// Starts the services of `databases` on ephemeral ports and waits until they answer.
async fn run(
    databases: BTreeMap<agilepm::system::ServiceNameKey, String>,
    external: &[(ServiceName, String)],
    auth: AuthConfig,
    tls: TlsConfig,
    nats: NatsConfig,
    host: std::net::IpAddr,
) -> RunningSystem {
    let config = SystemConfig {
        browser: Default::default(),
        databases,
        host,
        ports: BTreeMap::new(),
        auth,
        tls,
        db_max_connections: TEST_POOL_SIZE,
        nats,
        external_endpoints: external
            .iter()
            .map(|(name, endpoint)| ((*name).into(), endpoint.clone()))
            .collect(),
    };
    let mut system = RunningSystem::start(config).await.expect("start services");
    system
        .wait_ready(Duration::from_secs(30))
        .await
        .expect("services ready");
    system
}

/// An event feed server over a bare database, for testing the outbox and feed without a
/// domain service.
pub struct FeedServer {
    /// The database the feed serves (append to its outbox to produce events).
    pub db: Db,
    /// Where the feed listens.
    pub address: SocketAddr,
    shutdown: CancellationToken,
}

impl FeedServer {
    /// Serves `db`'s outbox on an ephemeral port with `options`.
    pub async fn start(db: Db, options: FeedOptions) -> FeedServer {
        FeedServer::start_configured(db, options, test_auth(), |server| server).await
    }

    /// Like [`FeedServer::start`], verifying tokens with `auth` and with the server
    /// `configure` makes of the default one (its limits, its browser access).
    pub async fn start_configured(
        db: Db,
        options: FeedOptions,
        auth: &AuthConfig,
        configure: impl FnOnce(GrpcServer) -> GrpcServer,
    ) -> FeedServer {
        use agilepm_proto::events::v1::event_feed_service_server::EventFeedServiceServer;
        let shutdown = CancellationToken::new();
        let feed = EventFeed::new(db.clone(), options, shutdown.clone())
            .await
            .expect("feed");
        let authenticator = auth.authenticator(&shutdown).expect("authenticator");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        // Limits first: services are bounded by the limits set when they are added.
        let server = configure(GrpcServer::new(authenticator))
            .add_service(EventFeedServiceServer::new(feed));
        tokio::spawn(server.serve(listener, None, shutdown.clone()));
        FeedServer {
            db,
            address,
            shutdown,
        }
    }
}

impl Drop for FeedServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The events the feed at `channel` serves: once at least `count` have arrived (or 10 s
/// have passed), it reads on until the subscription has scanned up to the feed's head as
/// it is then, so an event beyond `count` committed by then is returned too, and the
/// caller's assertion on the count sees it. No quiet spell is waited for: the heartbeat's
/// scanned position says when everything committed has been read.
pub async fn feed_events(channel: PeerChannel, count: usize) -> Vec<Event> {
    let mut feed = EventFeedServiceClient::new(channel);
    let request = SubscribeRequest {
        heartbeat_interval_ms: 100,
        ..Default::default()
    };
    let mut stream = feed
        .clone()
        .subscribe(request)
        .await
        .expect("subscribe")
        .into_inner();
    let mut events: Vec<Event> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut settle_at: Option<(i64, i64)> = None;
    loop {
        if settle_at.is_none() && events.len() >= count {
            let head = feed
                .get_feed_head(agilepm_proto::events::v1::GetFeedHeadRequest {})
                .await
                .expect("the feed head")
                .into_inner()
                .head_position;
            let target = feed_order(&head);
            if events
                .last()
                .map_or(head.is_empty(), |e| feed_order(&e.position) >= target)
            {
                return events;
            }
            settle_at = Some(target);
        }
        let message = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(message))) => message,
            _ => return events,
        };
        let reached = match message.kind {
            Some(subscribe_response::Kind::Event(event)) => {
                let at = feed_order(&event.position);
                events.push(event);
                settle_at.is_some_and(|target| at >= target)
            }
            Some(subscribe_response::Kind::Heartbeat(heartbeat)) => {
                settle_at.is_some_and(|target| feed_order(&heartbeat.scanned_position) >= target)
            }
            None => false,
        };
        if reached {
            return events;
        }
    }
}

/// Where `position` (`<feed>.<txid>.<seq>`, or empty for the start) falls in feed order.
fn feed_order(position: &str) -> (i64, i64) {
    let mut parts = position.rsplit('.');
    let seq = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let txid = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (txid, seq)
}

/// The UTC day `offset` days from today, YYYY-MM-DD: tests that need several days of
/// estimates use past days (an estimate may be dated at most one day ahead).
pub fn day(offset: i64) -> String {
    (chrono::Utc::now().date_naive() + chrono::TimeDelta::days(offset))
        .format("%Y-%m-%d")
        .to_string()
}
