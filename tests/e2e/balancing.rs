//! A peer endpoint that names several replicas spreads the calls over them: a list of
//! endpoints, or a `dns:///` name (`platform::wire::peer_target`). Real processes, each
//! counting what it served in its own metrics.

use std::net::SocketAddr;

use agilepm_platform::wire::auth::{Credentials, Role};
use agilepm_platform::wire::client::connect_lazy;
use agilepm_platform::wire::config::ServiceName;
use agilepm_proto::task::v1::GetTaskRequest;
use agilepm_proto::task::v1::task_service_client::TaskServiceClient;
use agilepm_testkit::metrics::Scrape;
use agilepm_testkit::{Engine, TestDb, TestSystem, engine_tests};

use crate::processes::{free_address, spawn_task, wait_serving};

engine_tests!(calls_spread_over_the_replicas_a_peer_endpoint_names);

/// `GetTask` calls a task process has answered, whatever their outcome.
async fn served(metrics: SocketAddr) -> f64 {
    Scrape::of(metrics)
        .await
        .unwrap()
        .sum(
            "rpc_server_call_duration_seconds_count",
            &[("rpc_method", "GetTask")],
        )
        .unwrap_or(0.0)
}

/// Sends `calls` `GetTask` calls through a channel to `endpoint`, one after another.
async fn call(endpoint: &str, calls: usize) {
    let token = agilepm_testkit::person_token("viewer", "acme", &[Role::Viewer]);
    let channel = connect_lazy(endpoint, Some(Credentials::fixed(&token).unwrap())).unwrap();
    let mut client = TaskServiceClient::new(channel);
    for _ in 0..calls {
        let status = client
            .get_task(GetTaskRequest {
                id: uuid::Uuid::now_v7().to_string(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    }
}

async fn calls_spread_over_the_replicas_a_peer_endpoint_names(engine: Engine) {
    let system = TestSystem::start(engine, &[ServiceName::BacklogItem]).await;
    let database = TestDb::migrated(engine, agilepm::system::migrations(ServiceName::Task)).await;
    // Two replicas of the task service on one database, each serving its own metrics.
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let (address, metrics) = (free_address(), free_address());
        let child = spawn_task(
            address,
            database.url(),
            system.address(ServiceName::BacklogItem),
            &[("AGILEPM_METRICS_ADDRESS", metrics.to_string())],
        );
        wait_serving(address, "a task replica").await;
        replicas.push((child, address, metrics));
    }
    let (a, b) = (replicas[0].1, replicas[1].1);

    // A list: one channel, calls on both replicas.
    call(&format!("http://{a},http://{b}"), 200).await;
    let (on_a, on_b) = (served(replicas[0].2).await, served(replicas[1].2).await);
    assert_eq!(on_a + on_b, 200.0);
    assert!(
        on_a >= 40.0 && on_b >= 40.0,
        "both replicas served a fair share: {on_a} and {on_b}"
    );

    // A name, resolved: `localhost` is 127.0.0.1 here, so every call goes to the replica
    // listening there on that port, through the resolver's balanced channel.
    call(&format!("dns:///localhost:{}", a.port()), 30).await;
    assert_eq!(served(replicas[0].2).await, on_a + 30.0);
    assert_eq!(served(replicas[1].2).await, on_b);

    for (mut child, _, _) in replicas {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    system.stop().await;
}
