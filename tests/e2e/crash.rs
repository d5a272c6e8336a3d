//! Fault tests with real processes: the coordinator killed with SIGKILL mid-run and
//! restarted, two coordinator replicas on one database, and a coordinator its peer
//! refuses.

use std::collections::BTreeMap;
use std::time::Duration;

use agilepm::system::{RunningSystem, SystemConfig};
use agilepm_platform::wire::config::ServiceName;
use agilepm_proto::backlog::v1::BacklogItemStatus;
use agilepm_proto::common::v1::StatusTransitionMode;
use agilepm_proto::coordinator::v1::GetCoordinatorStatusRequest;
use agilepm_proto::coordinator::v1::coordinator_service_client::CoordinatorServiceClient;
use agilepm_testkit::{Engine, TestDb, TestSystem, engine_tests};
use tokio::process::{Child, Command};

use crate::coordinator::Sprinting;

engine_tests!(
    a_killed_coordinator_resumes_without_double_transitions,
    two_replicas_share_the_work_correctly,
    a_stopped_coordinator_hands_its_lease_over_at_once,
    a_peer_refusing_the_coordinator_is_retried_and_named_never_parked,
);

const ITEMS: usize = 40;
const TASKS: usize = 12;
const HOURS: i32 = 12;

/// The services a coordinator talks to.
const PEERS: [ServiceName; 3] = [
    ServiceName::BacklogItem,
    ServiceName::Task,
    ServiceName::Planning,
];

/// An in-process coordinator on `database_url`, with its peers in `system`.
fn coordinator_config(system: &TestSystem, database_url: &str) -> SystemConfig {
    SystemConfig {
        browser: Default::default(),
        databases: BTreeMap::from([(ServiceName::Coordinator.into(), database_url.to_owned())]),
        host: [127, 0, 0, 1].into(),
        ports: BTreeMap::new(),
        auth: agilepm_testkit::test_auth().clone(),
        tls: Default::default(),
        db_max_connections: 4,
        nats: Default::default(),
        external_endpoints: PEERS
            .iter()
            .map(|service| {
                (
                    (*service).into(),
                    format!("http://{}", system.address(*service)),
                )
            })
            .collect(),
    }
}

fn spawn_coordinator(system: &TestSystem, database_url: &str) -> Child {
    spawn_coordinator_with(
        system.address(ServiceName::BacklogItem),
        system.address(ServiceName::Task),
        database_url,
        &[],
        None,
    )
}

/// A coordinator process on `database_url` calling the services at these addresses, with
/// `env` on top of the suite's settings, in network namespace `namespace` if one is given
/// (a test "host").
pub fn spawn_coordinator_with(
    backlog_item: std::net::SocketAddr,
    task: std::net::SocketAddr,
    database_url: &str,
    env: &[(&str, String)],
    namespace: Option<&str>,
) -> Child {
    let binary = env!("CARGO_BIN_EXE_coordinator-under-test");
    let mut command = match namespace {
        // `ip netns exec` enters the namespace and execs the binary: the child is the
        // coordinator itself, so killing it kills the coordinator.
        Some(namespace) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", namespace, binary]);
            command
        }
        None => Command::new(binary),
    };
    command
        .env("AGILEPM_LISTEN", "127.0.0.1:0")
        .env("AGILEPM_DATABASE_URL", database_url)
        .env(
            "AGILEPM_BACKLOG_ITEM_ENDPOINT",
            format!("http://{backlog_item}"),
        )
        .env("AGILEPM_TASK_ENDPOINT", format!("http://{task}"))
        .env("RUST_LOG", "error")
        .env("AGILEPM_DB_MAX_CONNECTIONS", "4")
        // A killed leaseholder's restart takes over once its lease expires: 2 s, not 10.
        .env("AGILEPM_LEASE_TTL_MS", "2000")
        // The system's own secret, so the coordinator's identity is verified by its peers.
        .env("AGILEPM_AUTH_SECRET", agilepm_testkit::test_secret())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    command.spawn().expect("start the coordinator process")
}

async fn a_killed_coordinator_resumes_without_double_transitions(engine: Engine) {
    let system = TestSystem::start(engine, &PEERS).await;
    let s = Sprinting::prepare(system, StatusTransitionMode::Automatic).await;
    let coordinator_db = TestDb::create(engine).await;
    let mut coordinator = spawn_coordinator(&s.system, coordinator_db.url());

    let mut items = Vec::new();
    for _ in 0..ITEMS {
        items.push(s.committed_item(TASKS, HOURS).await);
    }
    // 16 clients estimate the items down, interleaved day by day; the coordinator is
    // killed a third of the way through and restarted a little later.
    let total = ITEMS * TASKS * HOURS as usize;
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers = crate::coordinator::estimate_down(&s, &items, 16, HOURS, sent.clone());
    while sent.load(std::sync::atomic::Ordering::Relaxed) < total / 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    coordinator.start_kill().expect("SIGKILL the coordinator");
    let status = coordinator.wait().await.unwrap();
    assert!(!status.success(), "killed, not exited: {status:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut restarted = spawn_coordinator(&s.system, coordinator_db.url());
    for worker in workers {
        worker.await.unwrap();
    }
    for (item, _) in &items {
        s.wait_for(item, BacklogItemStatus::Done, false).await;
    }
    let changes = s
        .status_changes(|c| items.iter().all(|(item, _)| c.contains_key(item)))
        .await;
    for (item, _) in &items {
        let done: Vec<_> = changes[item]
            .iter()
            .filter(|c| c.new_status == BacklogItemStatus::Done as i32)
            .collect();
        assert_eq!(
            (changes[item].len(), done.len()),
            (1, 1),
            "item {item}: {:?}",
            changes[item]
        );
    }
    restarted.start_kill().unwrap();
    let _ = restarted.wait().await;
    s.system.stop().await;
}

async fn two_replicas_share_the_work_correctly(engine: Engine) {
    let system = TestSystem::start(engine, &PEERS).await;
    let s = Sprinting::prepare(system, StatusTransitionMode::Automatic).await;
    let coordinator_db = TestDb::create(engine).await;
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let config = coordinator_config(&s.system, coordinator_db.url());
        let mut replica = RunningSystem::start(config).await.unwrap();
        replica.wait_ready(Duration::from_secs(30)).await.unwrap();
        replicas.push(replica);
    }
    let mut items = Vec::new();
    for _ in 0..5 {
        let (item, tasks) = s.committed_item(3, 2).await;
        crate::coordinator::burn_down(&s, &item, &tasks, 2, false).await;
        items.push(item);
    }
    for item in &items {
        s.wait_for(item, BacklogItemStatus::Done, false).await;
    }
    let changes = s
        .status_changes(|c| items.iter().all(|item| c.contains_key(item)))
        .await;
    for item in &items {
        assert_eq!(changes[item].len(), 1, "item {item}");
    }
    // The lease keeps the standby idle: only one replica did the work.
    let mut processed = Vec::new();
    for replica in &replicas {
        let address = replica.address(ServiceName::Coordinator).unwrap();
        let mut client = CoordinatorServiceClient::new(agilepm_testkit::channel(
            address,
            &agilepm_testkit::operator_token(),
        ));
        processed.push(
            client
                .get_coordinator_status(GetCoordinatorStatusRequest {})
                .await
                .unwrap()
                .into_inner()
                .events_processed,
        );
    }
    processed.sort_unstable();
    assert_eq!(processed[0], 0, "the standby stayed idle: {processed:?}");
    assert!(processed[1] > 0, "{processed:?}");
    for replica in replicas {
        replica.stop().await.unwrap();
    }
    s.system.stop().await;
}

async fn a_stopped_coordinator_hands_its_lease_over_at_once(engine: Engine) {
    let system = TestSystem::start(engine, &PEERS).await;
    let coordinator_db = TestDb::create(engine).await;
    let config = coordinator_config(&system, coordinator_db.url());
    let mut coordinator = RunningSystem::start(config).await.unwrap();
    coordinator
        .wait_ready(Duration::from_secs(30))
        .await
        .unwrap();
    sqlx::any::install_default_drivers();
    let leases = sqlx::AnyPool::connect(coordinator_db.url()).await.unwrap();
    let holders =
        || sqlx::query_scalar::<_, String>("SELECT holder FROM leases").fetch_all(&leases);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while holders().await.unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the coordinator never took the lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    coordinator.stop().await.unwrap();
    // Released before the database closed, so a standby takes over at its next attempt
    // instead of waiting out the lease.
    assert!(holders().await.unwrap().is_empty());
    leases.close().await;
    system.stop().await;
}

/// Issue 36 §2: a peer that refuses the coordinator's identity (here a backlog-item
/// service trusting another secret: UNAUTHENTICATED for every item alike) is a fault of
/// the deployment, not of an item. Nothing is parked; the batch is retried with backoff,
/// readiness turns NOT_SERVING naming a configuration fault, and once the coordinator
/// reaches the right peer the item finishes, from the position it held.
async fn a_peer_refusing_the_coordinator_is_retried_and_named_never_parked(engine: Engine) {
    use crate::processes::{free_address, spawn_service, wait_serving};
    let system = TestSystem::start(engine, &PEERS).await;
    let s = Sprinting::prepare(system, StatusTransitionMode::Automatic).await;
    let refusing_db = TestDb::create(engine).await;
    let refusing = free_address();
    let _refusing = spawn_service(
        env!("CARGO_BIN_EXE_backlog-item-under-test"),
        refusing,
        refusing_db.url(),
        &[],
        &[(
            "AGILEPM_AUTH_SECRET",
            "a-secret-the-coordinator-does-not-hold-0123456789".into(),
        )],
    );
    wait_serving(refusing, "a backlog-item service on another secret").await;
    let coordinator_db = TestDb::create(engine).await;
    let address = free_address();
    let task = s.system.address(ServiceName::Task);
    let env = [("AGILEPM_LISTEN", address.to_string())];
    let mut coordinator = spawn_coordinator_with(refusing, task, coordinator_db.url(), &env, None);
    wait_serving(address, "the coordinator").await;
    let (item, tasks) = s.committed_item(1, 2).await;
    s.tasks()
        .estimate_task_hours_remaining(crate::coordinator::estimate(&tasks[0], 0))
        .await
        .unwrap();
    let mut operator = CoordinatorServiceClient::new(agilepm_testkit::channel(
        address,
        &agilepm_testkit::operator_token(),
    ));
    // Readiness turns after the 10 s grace: wait for it (up to 20 s).
    let status = crate::coordinator::coordinator_status_once(&mut operator, |s| !s.healthy).await;
    assert!(!status.healthy, "{status:?}");
    assert!(
        status.readiness_reason.contains("configuration fault")
            && status.readiness_reason.contains("Unauthenticated"),
        "{status:?}"
    );
    assert_eq!(
        (status.parked_items, status.poison_events),
        (0, 0),
        "{status:?}"
    );
    assert_eq!(
        s.item(&item).await.status,
        BacklogItemStatus::Committed as i32
    );
    // Pointed at the right peer, it resumes from the position it held.
    coordinator.start_kill().unwrap();
    let _ = coordinator.wait().await;
    let backlog = s.system.address(ServiceName::BacklogItem);
    let _coordinator = spawn_coordinator_with(backlog, task, coordinator_db.url(), &env, None);
    wait_serving(address, "the coordinator, reconfigured").await;
    s.wait_for(&item, BacklogItemStatus::Done, false).await;
    let status =
        crate::coordinator::coordinator_status_once(&mut operator, |s| s.lag_events == 0).await;
    assert_eq!(
        (status.parked_items, status.readiness_reason.as_str()),
        (0, "ready")
    );
    s.system.stop().await;
}
