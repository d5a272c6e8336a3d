//! Task service benchmark, on SQLite and PostgreSQL, over real gRPC on loopback:
//!
//! - **throughput**: `EstimateTaskHoursRemaining` throughput and latency at 1, 8 and 32
//!   concurrent clients, with 1k and with 1M existing tasks. Existing tasks are generated
//!   inside the database (`agilepm_task::preload`); estimates hit tasks chosen uniformly
//!   at random across all of them.
//! - **log-age**: whether an estimate's cost grows with its task's age. Half the tasks
//!   have a 1-day estimation log, half a 100-day one; 8 clients alternate between the
//!   two, in the BASIC view (the default) and the FULL one, so all four are measured
//!   side by side under the same load.
//!
//! ```sh
//! cargo bench -p agilepm-tests --bench task                      # everything
//! cargo bench -p agilepm-tests --bench task -- sqlite            # one engine
//! cargo bench -p agilepm-tests --bench task -- log-age postgres  # one part, one engine
//! ```
//! PostgreSQL needs `AGILEPM_TEST_POSTGRES_URL` (e.g. `postgres://root@127.0.0.1:5432/test`).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use agilepm::system::{RunningSystem, SystemConfig};
use agilepm_platform::storage::db::{Db, Engine};
use agilepm_platform::wire::config::ServiceName;
use agilepm_proto::task::v1::task_service_client::TaskServiceClient;
use agilepm_proto::task::v1::{EstimateTaskHoursRemainingRequest, TaskView};
use agilepm_testkit::{TestDb, channel};
use rand::Rng as _;

const CLIENTS: [usize; 3] = [1, 8, 32];
const DURATION: Duration = Duration::from_secs(5);

/// Tasks of each age in the log-age part, and the older ones' log length in days.
const AGED_TASKS: i64 = 1_000;
const OLD_LOG_DAYS: i64 = 100;
const LOG_AGE_CLIENTS: usize = 8;
const LOG_AGE_DURATION: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let parts = ["throughput", "log-age"];
    let engines = [("sqlite", Engine::Sqlite), ("postgres", Engine::Postgres)];
    let chosen = |of: &[&str], name: &str| {
        !wanted.iter().any(|w| of.contains(&w.as_str())) || wanted.iter().any(|w| w == name)
    };
    let engine_names: Vec<&str> = engines.iter().map(|(name, _)| *name).collect();
    if chosen(&parts, "throughput") {
        println!("| engine | existing tasks | clients | estimates/s | p50 ms | p99 ms | max ms |");
        println!("|---|---|---|---|---|---|---|");
        for (name, engine) in engines {
            if chosen(&engine_names, name) {
                for existing in [1_000, 1_000_000] {
                    run(name, engine, existing).await;
                }
            }
        }
    }
    if chosen(&parts, "log-age") {
        println!();
        println!("| engine | view | log days | estimates | p50 ms | p99 ms | p50 vs 1 day |");
        println!("|---|---|---|---|---|---|---|");
        for (name, engine) in engines {
            if chosen(&engine_names, name) {
                log_age(name, engine).await;
            }
        }
    }
}

/// The task service alone on a fresh `engine` database, after `load` filled it.
async fn serve(
    name: &str,
    engine: Engine,
    load: impl AsyncFnOnce(&Db),
) -> (TestDb, RunningSystem, SocketAddr) {
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
    load(&db).await;
    eprintln!("{name}: loaded in {:.1?}", started.elapsed());
    db.close().await;

    let config = SystemConfig {
        browser: Default::default(),
        databases: BTreeMap::from([(ServiceName::Task.into(), database.url().to_owned())]),
        host: [127, 0, 0, 1].into(),
        ports: BTreeMap::new(),
        auth: agilepm_testkit::test_auth().clone(),
        tls: Default::default(),
        db_max_connections: 32,
        nats: Default::default(),
        external_endpoints: BTreeMap::new(),
    };
    let mut system = RunningSystem::start(config).await.unwrap();
    system.wait_ready(Duration::from_secs(30)).await.unwrap();
    let address = system.address(ServiceName::Task).unwrap();
    (database, system, address)
}

async fn run(name: &str, engine: Engine, existing: i64) {
    let (_database, system, address) = serve(name, engine, async |db: &Db| {
        agilepm_task::preload::preload(db, existing).await.unwrap();
    })
    .await;
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

/// Estimates of tasks with a 1-day and a 100-day log, in both views, interleaved: each
/// client cycles through the four kinds, so all see the same load and the same noise.
async fn log_age(name: &str, engine: Engine) {
    let (_database, system, address) = serve(name, engine, async |db: &Db| {
        agilepm_task::preload::preload(db, 2 * AGED_TASKS)
            .await
            .unwrap();
        agilepm_task::preload::age_logs(db, AGED_TASKS, 2 * AGED_TASKS, OLD_LOG_DAYS - 1)
            .await
            .unwrap();
    })
    .await;
    // (view, log days): young tasks are 0..AGED_TASKS, old ones AGED_TASKS.. .
    let kinds = [
        (TaskView::Basic, 1),
        (TaskView::Basic, OLD_LOG_DAYS),
        (TaskView::Full, 1),
        (TaskView::Full, OLD_LOG_DAYS),
    ];
    let deadline = Instant::now() + LOG_AGE_DURATION;
    let workers: Vec<_> = (0..LOG_AGE_CLIENTS)
        .map(|client| {
            let mut tasks = TaskServiceClient::new(channel(address, "bench"));
            tokio::spawn(async move {
                let mut latencies = vec![Vec::new(); kinds.len()];
                let mut turn = client;
                while Instant::now() < deadline {
                    let kind = turn % kinds.len();
                    turn += 1;
                    let (view, days) = kinds[kind];
                    let (n, hours) = {
                        let mut rng = rand::rng();
                        (rng.random_range(0..AGED_TASKS), rng.random_range(1..=1000))
                    };
                    let n = if days == 1 { n } else { AGED_TASKS + n };
                    let request = EstimateTaskHoursRemainingRequest {
                        id: agilepm_task::preload::task_id(n),
                        hours_remaining: hours,
                        date: String::new(),
                        expected_version: None,
                        view: view as i32,
                    };
                    let sent = Instant::now();
                    let response = tasks.estimate_task_hours_remaining(request).await.unwrap();
                    latencies[kind].push(sent.elapsed());
                    let log = &response.get_ref().task.as_ref().unwrap().estimation_log;
                    // Today's entry joins the preloaded ones.
                    let expected = if view == TaskView::Full {
                        days as usize + 1
                    } else {
                        0
                    };
                    assert_eq!(log.len(), expected, "{view:?} of a {days}-day task");
                }
                latencies
            })
        })
        .collect();
    let mut latencies = vec![Vec::new(); kinds.len()];
    for worker in workers {
        for (kind, measured) in worker.await.unwrap().into_iter().enumerate() {
            latencies[kind].extend(measured);
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pct = |latencies: &[Duration], p: f64| {
        ms(latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)])
    };
    let mut day_one_p50 = 0.0;
    for (kind, (view, days)) in kinds.iter().enumerate() {
        let measured = &mut latencies[kind];
        measured.sort();
        let p50 = pct(measured, 0.5);
        if *days == 1 {
            day_one_p50 = p50;
        }
        println!(
            "| {name} | {} | {days} | {} | {p50:.2} | {:.2} | {:.2}x |",
            view.as_str_name(),
            measured.len(),
            pct(measured, 0.99),
            p50 / day_one_p50,
        );
    }
    system.stop().await.unwrap();
}
