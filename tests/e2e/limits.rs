//! What one client can hold of a server is bounded, and a refusal is prompt: connections
//! past the cap are closed as they arrive and the server serves again once one goes; the
//! default deadline bounds calls, not the streams they open.

use std::net::SocketAddr;
use std::time::Duration;

use agilepm_platform::events::feed::FeedOptions;
use agilepm_platform::wire::limits::ServerLimits;
use agilepm_proto::events::v1::SubscribeRequest;
use agilepm_proto::events::v1::event_feed_service_client::EventFeedServiceClient;
use agilepm_testkit::{Engine, FeedServer, TestDb};
use futures::StreamExt as _;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// A feed server over a fresh SQLite database, enforcing `limits`.
async fn serve(limits: ServerLimits) -> (SocketAddr, FeedServer, TestDb) {
    let db = TestDb::create(Engine::Sqlite).await;
    let server = FeedServer::start_configured(
        db.connect_platform().await,
        FeedOptions::default(),
        agilepm_testkit::test_auth(),
        |server| server.with_limits(limits),
    )
    .await;
    (server.address, server, db)
}

/// A connection of its own (tonic channels share nothing), checked healthy or not within
/// two seconds. From 127.0.0.2, a peer like any other: the host's own address (127.0.0.1)
/// has a few connections beyond the cap, kept for its health probe.
async fn connect(address: SocketAddr) -> Result<Channel, String> {
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .local_address(Some([127, 0, 0, 2].into()))
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_past_the_cap_are_refused_at_once_and_served_once_one_goes() {
    agilepm_testkit::init();
    let limits = ServerLimits {
        max_connections: 2,
        ..ServerLimits::default()
    };
    let (address, server, _db) = serve(limits).await;
    let first = connect(address).await.expect("first connection");
    let _second = connect(address).await.expect("second connection");
    let started = tokio::time::Instant::now();
    assert!(
        connect(address).await.is_err(),
        "a third connection was served"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the refusal took {:?}",
        started.elapsed()
    );
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while connect(address).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a closed connection's place was not given to a new one"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_default_deadline_bounds_calls_not_the_streams_they_open() {
    agilepm_testkit::init();
    let limits = ServerLimits {
        default_deadline: Duration::from_millis(500),
        ..ServerLimits::default()
    };
    let (address, server, _db) = serve(limits).await;
    let channel = agilepm_testkit::channel(address, "acme");
    let mut stream = EventFeedServiceClient::new(channel)
        .subscribe(SubscribeRequest {
            heartbeat_interval_ms: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // Heartbeats keep coming for three times the deadline.
    let until = tokio::time::Instant::now() + Duration::from_millis(1500);
    let mut heartbeats = 0;
    while tokio::time::Instant::now() < until {
        let message = tokio::time::timeout(Duration::from_secs(2), stream.next())
            .await
            .expect("a heartbeat within 2 s")
            .expect("the stream goes on")
            .expect("no error");
        assert!(message.kind.is_some());
        heartbeats += 1;
    }
    assert!(heartbeats >= 10, "{heartbeats} heartbeats in 1.5 s");
    drop(server);
}

/// Opens a subscription as `token`: the stream, or the refusal's code.
async fn subscribe(
    address: SocketAddr,
    token: &str,
) -> Result<tonic::Streaming<agilepm_proto::events::v1::SubscribeResponse>, tonic::Code> {
    EventFeedServiceClient::new(agilepm_testkit::channel(address, token))
        .subscribe(SubscribeRequest::default())
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| status.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscriptions_are_bounded_per_tenant_and_in_total() {
    agilepm_testkit::init();
    let db = TestDb::create(Engine::Sqlite).await;
    let options = FeedOptions {
        max_subscribers: 3,
        max_subscribers_per_tenant: 2,
        ..FeedOptions::default()
    };
    let server = agilepm_testkit::FeedServer::start(db.connect_platform().await, options).await;
    let address = server.address;
    let first = subscribe(address, "acme").await.expect("acme's first");
    let _second = subscribe(address, "acme").await.expect("acme's second");
    assert_eq!(
        subscribe(address, "acme").await.err(),
        Some(tonic::Code::ResourceExhausted),
        "a tenant's third"
    );
    let _globex = subscribe(address, "globex").await.expect("globex's first");
    assert_eq!(
        subscribe(address, "globex").await.err(),
        Some(tonic::Code::ResourceExhausted),
        "the feed's fourth"
    );
    // A subscription that ends gives its place back.
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while subscribe(address, "acme").await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place was not given back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// agilepm's own followers always get their subscription: with the shared pool full
/// (a tenant at its bound, operators at theirs, the feed at its total), the coordinator
/// and the notifier are still admitted, from a reserve of their own that is bounded per
/// service and that nobody else can draw on. Before, every caller spanning tenants shared
/// one place with operators, and a restarted coordinator was refused RESOURCE_EXHAUSTED
/// while tenants held the pool: items stopped finishing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_services_own_followers_get_in_when_the_pool_is_full() {
    use agilepm_platform::wire::config::ServiceName;
    agilepm_testkit::init();
    let db = TestDb::create(Engine::Sqlite).await;
    let options = FeedOptions {
        max_subscribers: 4,
        max_subscribers_per_tenant: 2,
        max_subscribers_per_service: 3,
        ..FeedOptions::default()
    };
    let server = agilepm_testkit::FeedServer::start(db.connect_platform().await, options).await;
    let address = server.address;
    let operator = agilepm_testkit::operator_token();
    let mut held = Vec::new();
    for token in ["acme", "acme", &operator, &operator] {
        held.push(subscribe(address, token).await.expect("within the pool"));
    }
    for token in ["globex", &operator] {
        assert_eq!(
            subscribe(address, token).await.err(),
            Some(tonic::Code::ResourceExhausted),
            "the shared pool is full"
        );
    }
    let coordinator = agilepm_testkit::service_token(ServiceName::Coordinator);
    let notifier = agilepm_testkit::service_token(ServiceName::Notifier);
    for _ in 0..3 {
        held.push(
            subscribe(address, &coordinator)
                .await
                .expect("the coordinator's reserve"),
        );
    }
    held.push(
        subscribe(address, &notifier)
            .await
            .expect("the notifier's reserve"),
    );
    // The reserve is bounded per service, and drawing on it took nothing from the pool.
    assert_eq!(
        subscribe(address, &coordinator).await.err(),
        Some(tonic::Code::ResourceExhausted),
        "a fourth coordinator subscription"
    );
    drop(held.remove(0));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while subscribe(address, "globex").await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a tenant's place in the pool was not given back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A stuck statement or an abandoned transaction cannot hold a PostgreSQL connection (and
/// its locks) past the server's default deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_statements_and_idle_transactions_are_bounded() {
    agilepm_testkit::init();
    if agilepm_testkit::postgres_admin_url().is_none() {
        return;
    }
    let database = TestDb::create(Engine::Postgres).await;
    let db = database.connect_platform().await;
    for (setting, bound) in [
        ("statement_timeout", "20s"),
        ("idle_in_transaction_session_timeout", "30s"),
    ] {
        let shown: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {setting}")))
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(shown, bound, "{setting}");
    }
    db.close().await;
}
