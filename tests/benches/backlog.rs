//! Backlog benchmark: `MoveBacklogItem` and first-page `ListBacklogItems` latency for a
//! product backlog of 1k and of 100k items, on SQLite and PostgreSQL, over real gRPC.
//!
//! ```sh
//! cargo bench -p agilepm-tests --bench backlog [-- sqlite|postgres]
//! ```
//! PostgreSQL needs `AGILEPM_TEST_POSTGRES_URL`.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use agilepm::system::{RunningSystem, SystemConfig};
use agilepm_platform::storage::db::{Db, Engine};
use agilepm_platform::wire::config::ServiceName;
use agilepm_proto::backlog::v1::backlog_item_service_client::BacklogItemServiceClient;
use agilepm_proto::backlog::v1::{
    ListBacklogItemsRequest, MoveBacklogItemRequest, move_backlog_item_request,
};
use agilepm_testkit::{TestDb, channel};
use rand::Rng as _;

const PRODUCT: &str = "20000000-0000-4000-8000-000000000000";
const CALLS: usize = 300;

const PRELOAD_SQLITE: &str = "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < $1) \
     INSERT INTO backlog_items (id, tenant_id, product_id, request_id, summary, story, category, type, \
       story_points, benefit, penalty, cost, risk, priority_score, use_case_id, release_id, sprint_id, \
       status, rank, derived_from_ids, awaiting_acceptance, reconciled_task_revision, version, \
       create_time_us, update_time_us) \
     SELECT printf('30000000-0000-4000-8000-%012d', n), 'bench', $2, 'r' || n, 'story ' || n, '', '', 1, \
       0, 0, 0, 0, 0, 0.0, '', '', '', 1, printf('%06dV', n * 7), '', 0, 0, 1, n, n FROM s";

const PRELOAD_POSTGRES: &str = "INSERT INTO backlog_items (id, tenant_id, product_id, request_id, summary, story, \
       category, type, story_points, benefit, penalty, cost, risk, priority_score, use_case_id, release_id, \
       sprint_id, status, rank, derived_from_ids, awaiting_acceptance, reconciled_task_revision, version, \
       create_time_us, update_time_us) \
     SELECT '30000000-0000-4000-8000-' || lpad(n::text, 12, '0'), 'bench', $2, 'r' || n, 'story ' || n, '', '', 1, \
       0, 0, 0, 0, 0, 0.0, '', '', '', 1, lpad((n * 7)::text, 6, '0') || 'V', '', 0, 0, 1, n, n \
     FROM generate_series(1, $1) n";

#[tokio::main]
async fn main() {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    println!("| engine | backlog items | operation | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    for (name, engine) in [("sqlite", Engine::Sqlite), ("postgres", Engine::Postgres)] {
        if wanted.is_empty() || wanted.iter().any(|w| w == name) {
            for items in [1_000, 100_000] {
                run(name, engine, items).await;
            }
        }
    }
}

fn row(name: &str, items: i64, operation: &str, mut latencies: Vec<Duration>) {
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pct =
        |p: f64| ms(latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)]);
    println!(
        "| {name} | {items} | {operation} | {:.2} | {:.2} | {:.2} |",
        pct(0.5),
        pct(0.99),
        ms(latencies[latencies.len() - 1])
    );
}

async fn run(name: &str, engine: Engine, items: i64) {
    if engine == Engine::Postgres && agilepm_testkit::postgres_admin_url().is_none() {
        panic!("set AGILEPM_TEST_POSTGRES_URL to benchmark PostgreSQL");
    }
    let database = TestDb::create(engine).await;
    let db = Db::connect(
        database.url(),
        ServiceName::BacklogItem,
        4,
        agilepm_backlog_item::SPEC.migrations,
    )
    .await
    .unwrap();
    let sql = if engine == Engine::Sqlite {
        PRELOAD_SQLITE
    } else {
        PRELOAD_POSTGRES
    };
    sqlx::query(sql)
        .bind(items)
        .bind(PRODUCT)
        .execute(db.pool())
        .await
        .unwrap();
    if engine == Engine::Postgres {
        sqlx::query("ANALYZE").execute(db.pool()).await.unwrap();
    }
    db.close().await;
    let config = SystemConfig {
        browser: Default::default(),
        databases: BTreeMap::from([(ServiceName::BacklogItem.into(), database.url().to_owned())]),
        host: [127, 0, 0, 1].into(),
        ports: BTreeMap::new(),
        auth: agilepm_testkit::test_auth().clone(),
        tls: Default::default(),
        db_max_connections: 8,
        nats: Default::default(),
        external_endpoints: BTreeMap::new(),
    };
    let mut system = RunningSystem::start(config).await.unwrap();
    system.wait_ready(Duration::from_secs(30)).await.unwrap();
    let mut client = BacklogItemServiceClient::new(channel(
        system.address(ServiceName::BacklogItem).unwrap(),
        "bench",
    ));

    let mut listing = Vec::new();
    for _ in 0..CALLS {
        let started = Instant::now();
        let page = client
            .list_backlog_items(ListBacklogItemsRequest {
                product_id: PRODUCT.into(),
                page_size: 50,
                ..Default::default()
            })
            .await
            .unwrap();
        listing.push(started.elapsed());
        assert_eq!(page.get_ref().backlog_items.len(), 50);
    }
    row(name, items, "list first page (50)", listing);

    let mut moving = Vec::new();
    for _ in 0..CALLS {
        let (a, b) = {
            let mut rng = rand::rng();
            (rng.random_range(1..=items), rng.random_range(1..=items))
        };
        if a == b {
            continue;
        }
        let request = MoveBacklogItemRequest {
            id: format!("30000000-0000-4000-8000-{a:012}"),
            anchor: Some(move_backlog_item_request::Anchor::BeforeId(format!(
                "30000000-0000-4000-8000-{b:012}"
            ))),
            expected_version: None,
        };
        let started = Instant::now();
        client.move_backlog_item(request).await.unwrap();
        moving.push(started.elapsed());
    }
    row(name, items, "move one item", moving);
    system.stop().await.unwrap();
}
