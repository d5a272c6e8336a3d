//! Services as processes of their own, for tests that kill them or count what each served.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::process::{Child, Command};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A loopback address free a moment ago: a process about to start binds it at once.
pub fn free_address() -> SocketAddr {
    agilepm_testkit::metrics::free_address()
}

/// Waits until the gRPC server at `address` answers health `SERVING`.
pub async fn wait_serving(address: SocketAddr, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut health = HealthClient::new(agilepm_testkit::channel(address, "acme"));
        let check = health.check(HealthCheckRequest::default());
        if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(1), check).await
            && response.into_inner().status == ServingStatus::Serving as i32
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} on {address} did not serve within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The service binary `binary` as a process of its own on `address` with its database
/// at `database_url`, verifying the suite's tokens, its peers at `peers` (endpoint
/// variable, address), with `env` on top (not yet serving: see [`wait_serving`]).
pub fn spawn_service(
    binary: &str,
    address: SocketAddr,
    database_url: &str,
    peers: &[(&str, SocketAddr)],
    env: &[(&str, String)],
) -> Child {
    let mut command = Command::new(binary);
    command
        .env("AGILEPM_LISTEN", address.to_string())
        .env("AGILEPM_DATABASE_URL", database_url)
        .env("AGILEPM_DB_MAX_CONNECTIONS", "8")
        .env("AGILEPM_AUTH_SECRET", agilepm_testkit::test_secret())
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true);
    for (variable, peer) in peers {
        command.env(variable, format!("http://{peer}"));
    }
    for (name, value) in env {
        command.env(name, value);
    }
    command
        .spawn()
        .unwrap_or_else(|error| panic!("start {binary}: {error}"))
}

/// The task service in a process of its own on `address`, its database at `database_url`
/// and its backlog-item peer at `backlog_item`, with `env` on top (not yet serving: see
/// [`wait_serving`]).
pub fn spawn_task(
    address: SocketAddr,
    database_url: &str,
    backlog_item: SocketAddr,
    env: &[(&str, String)],
) -> Child {
    spawn_service(
        env!("CARGO_BIN_EXE_task-under-test"),
        address,
        database_url,
        &[("AGILEPM_BACKLOG_ITEM_ENDPOINT", backlog_item)],
        env,
    )
}
