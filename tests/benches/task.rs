//! Task service benchmark: `EstimateTaskHoursRemaining` throughput and latency at 1, 8
//! and 32 concurrent clients, with 1k and with 1M existing tasks, on SQLite and
//! PostgreSQL. Existing tasks are generated inside the database
//! (`agilepm_task::preload`); estimates hit tasks chosen uniformly at random
//! across all of them, over real gRPC on loopback.
//!
//! ```sh
//! cargo bench -p agilepm-tests --bench task                  # everything
//! cargo bench -p agilepm-tests --bench task -- sqlite        # one engine
//! ```
//! PostgreSQL needs `AGILEPM_TEST_POSTGRES_URL` (e.g. `postgres://root@127.0.0.1:5432/test`).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use agilepm::system::{RunningSystem, SystemConfig};
use agilepm_platform::storage::db::{Db, Engine};
use agilepm_platform::wire::config::ServiceName;
use agilepm_proto::task::v1::EstimateTaskHoursRemainingRequest;
use agilepm_proto::task::v1::task_service_client::TaskServiceClient;
use agilepm_testkit::{TestDb, channel};
use rand::Rng as _;

const CLIENTS: [usize; 3] = [1, 8, 32];
const DURATION: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    println!("| engine | existing tasks | clients | estimates/s | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|---|");
    for (name, engine) in [("sqlite", Engine::Sqlite), ("postgres", Engine::Postgres)] {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == name) {
            continue;
        }
        for existing in [1_000, 1_000_000] {
            run(name, engine, existing).await;
        }
    }
}

async fn run(name: &str, engine: Engine, existing: i64) {
    if engine == Engine::Postgres && agilepm_testkit::postgres_admin_url().is_none() {
        panic!("set AGILEPM_TEST_POSTGRES_URL to benchmark PostgreSQL");
    }
    let database = TestDb::create(engine).await;
    let db = Db::connect(
        database.url(),
        ServiceName::Task,
        4,
        agilepm_task::SPEC.migrations,
    )
    .await
    .unwrap();
    let started = Instant::now();
    agilepm_task::preload::preload(&db, existing).await.unwrap();
    eprintln!(
        "{name}: preloaded {existing} tasks in {:.1?}",
        started.elapsed()
    );
    db.close().await;

    let config = SystemConfig {
        databases: BTreeMap::from([(ServiceName::Task.into(), database.url().to_owned())]),
        host: [127, 0, 0, 1].into(),
        ports: BTreeMap::new(),
        auth: agilepm_testkit::test_auth().clone(),
        tls: Default::default(),
        db_max_connections: 32,
        external_endpoints: BTreeMap::new(),
    };
    let mut system = RunningSystem::start(config).await.unwrap();
    system.wait_ready(Duration::from_secs(30)).await.unwrap();
    let address = system.address(ServiceName::Task).unwrap();

    for clients in CLIENTS {
        let deadline = Instant::now() + DURATION;
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                let mut tasks = TaskServiceClient::new(channel(address, "bench"));
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    while Instant::now() < deadline {
                        let (n, hours) = {
                            let mut rng = rand::rng();
                            (rng.random_range(0..existing), rng.random_range(1..=1000))
                        };
                        let request = EstimateTaskHoursRemainingRequest {
                            view: 0,
                            id: agilepm_task::preload::task_id(n),
                            hours_remaining: hours,
                            date: String::new(),
                            expected_version: None,
                        };
                        let sent = Instant::now();
                        tasks.estimate_task_hours_remaining(request).await.unwrap();
                        latencies.push(sent.elapsed());
                    }
                    latencies
                })
            })
            .collect();
        let mut latencies = Vec::new();
        for worker in workers {
            latencies.extend(worker.await.unwrap());
        }
        latencies.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let pct = |p: f64| {
            ms(latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)])
        };
        println!(
            "| {name} | {existing} | {clients} | {:.0} | {:.2} | {:.2} | {:.2} |",
            latencies.len() as f64 / DURATION.as_secs_f64(),
            pct(0.5),
            pct(0.99),
            ms(latencies[latencies.len() - 1]),
        );
    }
    system.stop().await.unwrap();
}
