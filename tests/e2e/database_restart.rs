//! A PostgreSQL restart under a running service (a private cluster, restarted for real):
//! the connections the pool held from before the restart were terminated by the server,
//! and no caller may be the one who finds out. Every call after the server is back
//! succeeds on its first attempt.

use agilepm_platform::wire::config::ServiceName;
use agilepm_proto::backlog::v1::backlog_item_service_client::BacklogItemServiceClient;
use agilepm_proto::backlog::v1::{GetBacklogItemRequest, PlanBacklogItemRequest};
use agilepm_testkit::TestSystem;

use crate::private_postgres::PrivatePostgres;

/// How many calls run side by side: enough to open several pooled connections, all of
/// which the restart kills.
const SIDE_BY_SIDE: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_database_restart_no_call_meets_a_dead_connection() {
    agilepm_testkit::init();
    let Some(postgres) = PrivatePostgres::start_or_skip("a database restart") else {
        return;
    };
    postgres.create_database("backlog").await;
    let system =
        TestSystem::start_on_databases(&[(ServiceName::BacklogItem, postgres.url("backlog"))])
            .await;
    let product_id = uuid::Uuid::now_v7().to_string();
    system.record_product("acme", &product_id).await;
    let client = BacklogItemServiceClient::new(system.channel(ServiceName::BacklogItem, "acme"));
    let item = crate::given::item(
        system.channel(ServiceName::BacklogItem, "acme"),
        &product_id,
    )
    .await
    .id;

    // Calls side by side, twice: several pooled connections, idle once they finish.
    let round = |label: &'static str| {
        let client = client.clone();
        let item = item.clone();
        let product_id = product_id.clone();
        async move {
            let calls = (0..SIDE_BY_SIDE).map(|n| {
                let mut client = client.clone();
                let item = item.clone();
                let product_id = product_id.clone();
                async move {
                    if n % 2 == 0 {
                        client
                            .get_backlog_item(GetBacklogItemRequest {
                                id: item,
                                ..Default::default()
                            })
                            .await
                            .map(|_| ())
                    } else {
                        client
                            .plan_backlog_item(PlanBacklogItemRequest {
                                request_id: uuid::Uuid::new_v4().to_string(),
                                product_id,
                                summary: "Story".into(),
                                ..Default::default()
                            })
                            .await
                            .map(|_| ())
                    }
                }
            });
            for (n, outcome) in futures::future::join_all(calls)
                .await
                .into_iter()
                .enumerate()
            {
                if let Err(status) = outcome {
                    panic!("{label}: call {n} failed: {status:?}");
                }
            }
        }
    };
    round("before the restart").await;
    round("before the restart, again").await;

    let restarting = std::time::Instant::now();
    postgres.restart();
    // What the service relies on: no restart is quicker than its ping window, so every
    // connection from before the restart has idled past it.
    let took = restarting.elapsed();
    assert!(
        took > agilepm_platform::storage::db::PING_WHEN_IDLE_FOR,
        "the restart took {took:?}, within the pool's ping window"
    );

    // The server is back: the first calls after it must not meet the terminated
    // connections, one after another and side by side.
    for n in 0..SIDE_BY_SIDE {
        let mut client = client.clone();
        if let Err(status) = client
            .get_backlog_item(GetBacklogItemRequest {
                id: item.clone(),
                ..Default::default()
            })
            .await
        {
            panic!("call {n} after the restart failed: {status:?}");
        }
    }
    round("after the restart").await;
    system.stop().await;
}
