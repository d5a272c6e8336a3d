//! Task service benchmark: `EstimateTaskHoursRemaining` throughput and latency at 1, 8
//! and 32 concurrent clients, with 1k and with 1M existing tasks, on SQLite and
//! PostgreSQL. Existing tasks are generated inside the database (12 per backlog item,
//! each with totals and a log entry); estimates hit tasks chosen uniformly at random
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
use agilepm_platform::config::ServiceName;
use agilepm_platform::db::{Db, Engine};
use agilepm_proto::task::v1::EstimateTaskHoursRemainingRequest;
use agilepm_proto::task::v1::task_service_client::TaskServiceClient;
use agilepm_testkit::{TestDb, channel};
use rand::Rng as _;

const CLIENTS: [usize; 3] = [1, 8, 32];
const DURATION: Duration = Duration::from_secs(5);

const PRELOAD_SQLITE: [&str; 3] = [
    "WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n < $1 - 1) \
     INSERT INTO tasks (id, tenant_id, backlog_item_id, request_id, name, description, volunteer_id, \
       status, hours_remaining, latest_log_day, version, create_time_us, update_time_us, removed_time_us) \
     SELECT printf('00000000-0000-4000-8000-%012d', n), 'bench', printf('10000000-0000-4000-8000-%012d', n / 12), \
       'r' || n, 'task ' || n, '', '', 1, 12, '2099-01-01', 1, n, n, NULL FROM s",
    "WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n < $1 - 1) \
     INSERT INTO estimation_log (task_id, day, backlog_item_id, hours_remaining, record_time_us) \
     SELECT printf('00000000-0000-4000-8000-%012d', n), '2099-01-01', printf('10000000-0000-4000-8000-%012d', n / 12), 12, n FROM s",
    "WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n < ($1 + 11) / 12 - 1) \
     INSERT INTO item_totals (backlog_item_id, tenant_id, hours_remaining, task_count, revision) \
     SELECT printf('10000000-0000-4000-8000-%012d', n), 'bench', 144, 12, 12 FROM s",
];

const PRELOAD_POSTGRES: [&str; 3] = [
    "INSERT INTO tasks (id, tenant_id, backlog_item_id, request_id, name, description, volunteer_id, \
       status, hours_remaining, latest_log_day, version, create_time_us, update_time_us, removed_time_us) \
     SELECT '00000000-0000-4000-8000-' || lpad(n::text, 12, '0'), 'bench', '10000000-0000-4000-8000-' || lpad((n / 12)::text, 12, '0'), \
       'r' || n, 'task ' || n, '', '', 1, 12, '2099-01-01', 1, n, n, NULL FROM generate_series(0, $1 - 1) n",
    "INSERT INTO estimation_log (task_id, day, backlog_item_id, hours_remaining, record_time_us) \
     SELECT '00000000-0000-4000-8000-' || lpad(n::text, 12, '0'), '2099-01-01', '10000000-0000-4000-8000-' || lpad((n / 12)::text, 12, '0'), 12, n \
     FROM generate_series(0, $1 - 1) n",
    "INSERT INTO item_totals (backlog_item_id, tenant_id, hours_remaining, task_count, revision) \
     SELECT '10000000-0000-4000-8000-' || lpad(n::text, 12, '0'), 'bench', 144, 12, 12 FROM generate_series(0, ($1 + 11) / 12 - 1) n",
];

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
    let statements = if engine == Engine::Sqlite {
        PRELOAD_SQLITE
    } else {
        PRELOAD_POSTGRES
    };
    for sql in statements {
        sqlx::query(sql)
            .bind(existing)
            .execute(db.pool())
            .await
            .unwrap();
    }
    if engine == Engine::Postgres {
        sqlx::query("ANALYZE").execute(db.pool()).await.unwrap();
    }
    eprintln!(
        "{name}: preloaded {existing} tasks in {:.1?}",
        started.elapsed()
    );
    db.close().await;

    let config = SystemConfig {
        databases: BTreeMap::from([(ServiceName::Task.into(), database.url().to_owned())]),
        host: [127, 0, 0, 1].into(),
        ports: BTreeMap::new(),
        auth_secret: None,
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
                            id: format!("00000000-0000-4000-8000-{n:012}"),
                            hours_remaining: hours,
                            date: "2099-01-02".into(),
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
