//! What this machine can do without agilepm, measured in the same run: PostgreSQL's own
//! `pgbench` simple-update workload, and an empty unary gRPC call on the same tonic stack.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agilepm_platform::runtime::server::GrpcServer;
use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// `pgbench -N` transactions per second with `clients` clients for `seconds`, on a scratch
/// database of the server at `server_url` (created and dropped here).
pub async fn pgbench_tps(server_url: &str, clients: usize, seconds: u64) -> anyhow::Result<f64> {
    let database = format!("agilepm_pgbench_{}", uuid::Uuid::new_v4().simple());
    crate::postgres::ensure_database(server_url, &database).await?;
    let url = crate::postgres::with_database(server_url, &database)?;
    let run = async {
        let init = tokio::process::Command::new("pgbench")
            .args(["-i", "-q", "-s", "4", &url])
            .output()
            .await
            .context("running pgbench (install PostgreSQL's client tools)")?;
        anyhow::ensure!(
            init.status.success(),
            "pgbench -i failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let threads = clients.min(2).to_string();
        let output = tokio::process::Command::new("pgbench")
            .args([
                "-N",
                "-c",
                &clients.to_string(),
                "-j",
                &threads,
                "-T",
                &seconds.to_string(),
                &url,
            ])
            .output()
            .await?;
        anyhow::ensure!(
            output.status.success(),
            "pgbench failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8_lossy(&output.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("tps ="))
            .context("no tps line in pgbench output")?;
        line.split_whitespace()
            .nth(2)
            .and_then(|v| v.parse().ok())
            .context("unparsable tps")
    };
    let tps = run.await;
    crate::postgres::drop_database(server_url, &database).await?;
    tps
}

/// Empty unary calls per second (`grpc.health.v1.Health/Check` on a server with nothing
/// else) with `clients` concurrent clients for `seconds`.
pub async fn empty_rpc_per_sec(clients: usize, seconds: u64) -> anyhow::Result<f64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let stop = CancellationToken::new();
    let server = tokio::spawn(
        GrpcServer::new(
            agilepm_platform::wire::auth::AuthConfig::development().authenticator(&stop)?,
        )
        .serve(listener, None, stop.clone()),
    );
    let calls = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            // One connection per client, as the estimate workload has.
            let channel =
                agilepm_platform::wire::client::connect_lazy(&format!("http://{address}"), None);
            let calls = calls.clone();
            (channel, calls)
        })
        .map(|(channel, calls)| {
            let mut client = HealthClient::new(channel.expect("valid endpoint"));
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    if client
                        .check(HealthCheckRequest {
                            service: String::new(),
                        })
                        .await
                        .is_ok()
                    {
                        calls.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await?;
    }
    stop.cancel();
    let _ = server.await;
    Ok(calls.load(Ordering::Relaxed) as f64 / seconds as f64)
}
