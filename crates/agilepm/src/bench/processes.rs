//! The services as separate processes (so each one's memory can be measured), started
//! from the binaries next to the running `agilepm` executable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use agilepm_platform::wire::config::ServiceName;
use anyhow::Context as _;
use tokio::process::{Child, Command};

/// A running service process.
pub struct ServiceProcess {
    /// Which service.
    pub name: ServiceName,
    /// How the report names it: the service, or `coordinator-2` for a second replica.
    pub label: String,
    /// Where it listens.
    pub port: u16,
    /// Where its metrics are scraped, when it serves them.
    pub metrics: Option<SocketAddr>,
    child: Child,
}

impl ServiceProcess {
    /// Peak resident memory so far, in MiB (Linux `VmHWM`).
    pub fn peak_rss_mib(&self) -> Option<f64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }

    /// CPU time (user + system) used so far, in seconds (Linux `/proc/PID/stat`).
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds_of(self.child.id()?)
    }

    /// Stops it (SIGKILL is fine: every acknowledged write is committed).
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// The services run with real token verification (a random secret per bench run), so the
/// figures include it; the bench's clients present tokens minted with the same secret.
pub fn bench_auth() -> &'static agilepm_platform::wire::auth::AuthConfig {
    static AUTH: std::sync::OnceLock<agilepm_platform::wire::auth::AuthConfig> =
        std::sync::OnceLock::new();
    AUTH.get_or_init(agilepm_platform::wire::auth::AuthConfig::with_random_secret)
}

fn binary(name: ServiceName) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("executable directory")?;
    let path = dir.join(format!("agilepm-{}", name.as_str()));
    anyhow::ensure!(
        path.exists(),
        "{} not found: build every binary first (cargo build --release), then run target/release/agilepm bench",
        path.display()
    );
    Ok(path)
}

/// Starts the services on `base_port`.. with `databases` (one URL per service, in
/// [`ServiceName::ALL`] order) and waits until each answers health checks. Each feed
/// admits `idle_subscribers` beyond its default maximum (1000), so that the benchmark's
/// idle subscribers and the coordinator's own fit. With `nats`, every service relays its
/// outbox there and `coordinators` replicas (on the ports after the first's, sharing its
/// database) read the task stream.
pub async fn start_all(
    base_port: u16,
    databases: &[String],
    idle_subscribers: usize,
    otlp: Option<SocketAddr>,
    nats: Option<String>,
    coordinators: usize,
) -> anyhow::Result<Vec<ServiceProcess>> {
    let max_subscribers = 1000 + idle_subscribers;
    let port = |i: usize| base_port + i as u16;
    // A service's place in ServiceName::ALL: its first port, and its database.
    let index = |name: ServiceName| {
        ServiceName::ALL
            .iter()
            .position(|n| *n == name)
            .unwrap_or(0)
    };
    let endpoint = |name: ServiceName| format!("http://127.0.0.1:{}", port(index(name)));
    let mut processes = Vec::new();
    // The services in start-up order, then the further coordinator replicas.
    let replicas = (1..coordinators.max(1)).map(|_| ServiceName::Coordinator);
    for (i, name) in ServiceName::ALL.into_iter().chain(replicas).enumerate() {
        if i == ServiceName::ALL.len() {
            // The replicas share the first coordinator's database: start them once it
            // has migrated it, or they race to create the same tables.
            wait_serving(&processes).await?;
        }
        // A further coordinator replica shares the first one's database (it once took
        // whatever database came last: the notifier's, once the notifier was added).
        let database = databases
            .get(index(name))
            .with_context(|| format!("no database for {name}"))?;
        let label = if i < ServiceName::ALL.len() {
            name.as_str().to_owned()
        } else {
            format!("{name}-{}", i - ServiceName::ALL.len() + 2)
        };
        let mut command = Command::new(binary(name)?);
        if name == ServiceName::Notifier {
            // One attempt per delivery: the webhook measurement dead-letters every DONE
            // during the estimate phase and then times redelivering them all.
            command.env("AGILEPM_NOTIFIER_MAX_ATTEMPTS", "1");
            // The bench's receiver listens on loopback, which a keyed notifier refuses
            // unless the operator allows it.
            command.env("AGILEPM_NOTIFIER_ALLOWED_NETWORKS", "127.0.0.0/8");
        }
        if let Some(nats) = &nats {
            command
                .env("AGILEPM_NATS_URL", nats)
                .env("AGILEPM_FEED", "nats");
        }
        // With telemetry: metrics on the port 10 above the service's, OTLP to the bench.
        let metrics = otlp.map(|_| SocketAddr::from(([127, 0, 0, 1], port(i) + 10)));
        if let (Some(otlp), Some(metrics)) = (otlp, metrics) {
            command
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"))
                .env("AGILEPM_METRICS_ADDRESS", metrics.to_string());
        }
        let child = command
            .env("AGILEPM_LISTEN", format!("127.0.0.1:{}", port(i)))
            .env("AGILEPM_DATABASE_URL", database)
            .env(
                "AGILEPM_BACKLOG_ITEM_ENDPOINT",
                endpoint(ServiceName::BacklogItem),
            )
            .env("AGILEPM_TASK_ENDPOINT", endpoint(ServiceName::Task))
            .env("AGILEPM_PLANNING_ENDPOINT", endpoint(ServiceName::Planning))
            .env("AGILEPM_DB_MAX_CONNECTIONS", "32")
            .env("AGILEPM_MAX_SUBSCRIBERS", max_subscribers.to_string())
            .env(
                "AGILEPM_AUTH_SECRET",
                secrecy::ExposeSecret::expose_secret(
                    &bench_auth().secret.clone().context("bench secret")?,
                ),
            )
            .env("RUST_LOG", "error")
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        processes.push(ServiceProcess {
            name,
            label,
            port: port(i),
            metrics,
            child,
        });
    }
    wait_serving(&processes).await?;
    Ok(processes)
}

/// Waits until each of `processes` answers health checks (30 s at most each).
async fn wait_serving(processes: &[ServiceProcess]) -> anyhow::Result<()> {
    for process in processes {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !crate::system::is_serving(([127, 0, 0, 1], process.port).into()).await {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{} did not become healthy",
                process.label
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// CPU time (user + system) of process `pid` so far, in seconds.
pub fn cpu_seconds_of(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are fixed.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // Linux reports in USER_HZ, 100 on every architecture Rust targets here.
    Some(ticks / 100.0)
}

/// CPU time of every process whose command name is `name` (e.g. all of a local
/// PostgreSQL server's backends), in seconds. Processes that ended in between are not
/// counted, so it is a lower bound.
pub fn cpu_seconds_of_all(name: &str) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == name)
        })
        .filter_map(cpu_seconds_of)
        .sum()
}
