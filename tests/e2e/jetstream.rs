//! Past one machine: the task service's outbox relayed to a real JetStream (a private
//! `nats-server -js` on a port and store of the test's own, so the test may kill it),
//! coordinator replicas in processes of their own sharing one durable consumer, and the
//! faults a deployment meets: a replica killed, the relaying service killed and
//! restarted, the NATS server killed and restarted.
//!
//! Every test checks the same three things: each item ends DONE with exactly one status
//! change (nothing lost, nothing doubled), every acknowledged estimate is reflected, and
//! the stream holds each outbox event exactly once (counted by `Nats-Msg-Id`).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agilepm_platform::events::jetstream::stream_name;
use agilepm_platform::wire::auth::Role;
use agilepm_platform::wire::config::{NatsConfig, ServiceName};
use agilepm_proto::backlog::v1::BacklogItemStatus;
use agilepm_proto::common::v1::StatusTransitionMode;
use agilepm_proto::coordinator::v1::GetCoordinatorStatusRequest;
use agilepm_proto::coordinator::v1::coordinator_service_client::CoordinatorServiceClient;
use agilepm_proto::task::v1::task_service_client::TaskServiceClient;
use agilepm_testkit::metrics::Scrape;
use agilepm_testkit::{Engine, TestDb, TestSystem, engine_tests};
use async_nats::jetstream::context::GetStreamErrorKind;
use tokio::process::{Child, Command};

use crate::coordinator::{Sprinting, burn_down, estimate, estimate_down};
use crate::crash::spawn_coordinator_with;
use crate::processes::{free_address, spawn_task, wait_serving};

engine_tests!(
    three_replicas_on_jetstream_finish_the_yardstick_and_the_race_exactly_once,
    killing_a_replica_the_relaying_service_and_nats_loses_and_doubles_nothing,
    two_relays_of_one_service_store_each_event_once_in_order,
    a_poisoned_item_parks_alone_on_jetstream,
);

/// Issue 36 §2 with the coordinator on JetStream: a replica consuming the task stream
/// parks the poisoned item and acknowledges its message, and every other item flows.
async fn a_poisoned_item_parks_alone_on_jetstream(engine: Engine) {
    let Some(nats) = PrivateNats::start_or_skip("a poisoned item on JetStream").await else {
        return;
    };
    let system = TestSystem::start_with_nats(
        engine,
        &[
            ServiceName::BacklogItem,
            ServiceName::Task,
            ServiceName::Planning,
        ],
        &[],
        nats.config(),
    )
    .await;
    let s = Sprinting::prepare(system, StatusTransitionMode::Automatic).await;
    let coordinator_db = TestDb::create(engine).await;
    let task = s.system.address(ServiceName::Task);
    let replica = Replica::start(&s, task, coordinator_db.url(), &nats).await;
    crate::coordinator::a_poisoned_item_parks_alone(&s, replica.address).await;
    replica.kill().await;
    s.system.stop().await;
}

/// A `nats-server -js` of the test's own.
pub struct PrivateNats {
    child: Child,
    port: u16,
    /// The address it listens on (`127.0.0.1`, or `0.0.0.0` for other hosts).
    bind: &'static str,
    store: tempfile::TempDir,
}

impl PrivateNats {
    /// Like [`PrivateNats::start`], or `None` (with a note on stderr) where no
    /// `nats-server` is installed, unless `AGILEPM_REQUIRE_NATS` is set (as CI sets it):
    /// `cargo test` works on a machine with only the Rust toolchain.
    pub async fn start_or_skip(test: &str) -> Option<PrivateNats> {
        PrivateNats::start_listening_on("127.0.0.1", test).await
    }

    /// Like [`PrivateNats::start_or_skip`], listening on `bind`.
    pub async fn start_listening_on(bind: &'static str, test: &str) -> Option<PrivateNats> {
        if !nats_server_installed(test) {
            return None;
        }
        Some(PrivateNats::start(bind).await)
    }

    /// Starts a server on `bind` and a free port with a fresh store, and waits until its
    /// JetStream answers.
    async fn start(bind: &'static str) -> PrivateNats {
        let port = free_address().port();
        let store = tempfile::tempdir().expect("a JetStream store directory");
        let child = spawn_nats(bind, port, store.path().to_owned());
        let nats = PrivateNats {
            child,
            port,
            bind,
            store,
        };
        nats.wait_ready().await;
        nats
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, then the same server again on the same port and store.
    pub async fn kill_and_restart(&mut self) {
        self.child.start_kill().expect("SIGKILL nats-server");
        let _ = self.child.wait().await;
        self.child = spawn_nats(self.bind, self.port, self.store.path().to_owned());
        self.wait_ready().await;
    }

    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            // A lookup of a stream that does not exist: JetStream answers "not found"
            // once it serves.
            let answer = match async_nats::connect(self.url()).await {
                Ok(client) => match async_nats::jetstream::new(client)
                    .get_stream("READINESS_PROBE")
                    .await
                {
                    Err(error) if matches!(error.kind(), GetStreamErrorKind::JetStream(_)) => {
                        Ok(())
                    }
                    Err(error) => Err(error.to_string()),
                    Ok(_) => Ok(()),
                },
                Err(error) => Err(error.to_string()),
            };
            let Err(error) = answer else { return };
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats-server on {} did not serve JetStream within 20 s: {error}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The settings a service uses to reach this server: a short ack wait, so a killed
    /// replica's messages are redelivered within the test's patience.
    pub fn config(&self) -> NatsConfig {
        NatsConfig {
            url: Some(self.url()),
            ack_wait: ACK_WAIT,
            ..NatsConfig::default()
        }
    }

    /// How often the durable consumer `durable` of `service`'s stream has delivered a
    /// message, redeliveries included, and how many messages the stream holds.
    pub async fn deliveries(&self, service: ServiceName, durable: &str) -> (u64, u64) {
        let client = async_nats::connect(self.url()).await.unwrap();
        let context = async_nats::jetstream::new(client);
        let stream = context.get_stream(stream_name(service)).await.unwrap();
        let messages = stream.get_info().await.unwrap().state.messages;
        let info = stream.consumer_info(durable).await.unwrap();
        (info.delivered.consumer_sequence, messages)
    }

    /// Every message of `service`'s stream, in stream order: its `Nats-Msg-Id` and the
    /// feed position it carries.
    pub async fn messages(&self, service: ServiceName) -> Vec<(String, String)> {
        let client = async_nats::connect(self.url()).await.unwrap();
        let context = async_nats::jetstream::new(client);
        let stream = context.get_stream(stream_name(service)).await.unwrap();
        let state = stream.get_info().await.unwrap().state;
        let mut messages = Vec::new();
        for sequence in state.first_sequence..=state.last_sequence {
            let message = stream.get_raw_message(sequence).await.unwrap();
            let header = |name: &str| {
                message
                    .headers
                    .get(name)
                    .map(|value| value.as_str().to_owned())
                    .unwrap_or_default()
            };
            messages.push((header("Nats-Msg-Id"), header("Agilepm-Position")));
        }
        messages
    }
}

/// Whether `nats-server` is installed; without it (and without `AGILEPM_REQUIRE_NATS`,
/// which CI sets) `test` is skipped with a note on stderr.
pub fn nats_server_installed(test: &str) -> bool {
    let installed = std::process::Command::new("nats-server")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !installed {
        assert!(
            std::env::var_os("AGILEPM_REQUIRE_NATS").is_none(),
            "AGILEPM_REQUIRE_NATS is set but nats-server is not installed"
        );
        eprintln!("SKIPPED {test}: nats-server is not installed (Debian: nats-server)");
    }
    installed
}

fn spawn_nats(bind: &str, port: u16, store: PathBuf) -> Child {
    Command::new("nats-server")
        .args(["-js", "-a", bind, "-p", &port.to_string(), "-sd"])
        .arg(store)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start nats-server (Debian's nats-server package)")
}

/// How long a replica may hold a message unacknowledged before another gets it.
pub const ACK_WAIT: Duration = Duration::from_secs(2);

/// A coordinator replica in a process of its own, reading the task stream.
struct Replica {
    child: Child,
    address: SocketAddr,
}

impl Replica {
    async fn start(
        s: &Sprinting,
        task: SocketAddr,
        database_url: &str,
        nats: &PrivateNats,
    ) -> Replica {
        let address = free_address();
        let child = spawn_coordinator_with(
            s.system.address(ServiceName::BacklogItem),
            task,
            database_url,
            &[
                ("AGILEPM_LISTEN", address.to_string()),
                ("AGILEPM_FEED", "nats".to_owned()),
                ("AGILEPM_NATS_URL", nats.url()),
                ("AGILEPM_NATS_ACK_WAIT_MS", ACK_WAIT.as_millis().to_string()),
            ],
            None,
        );
        wait_serving(address, "a coordinator replica").await;
        Replica { child, address }
    }

    async fn events_processed(&self) -> i64 {
        let mut client = CoordinatorServiceClient::new(agilepm_testkit::channel(
            self.address,
            &agilepm_testkit::operator_token(),
        ));
        client
            .get_coordinator_status(GetCoordinatorStatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .events_processed
    }

    async fn kill(mut self) {
        self.child.start_kill().expect("SIGKILL a replica");
        let status = self.child.wait().await.unwrap();
        assert!(!status.success(), "killed, not exited: {status:?}");
    }
}

/// Three replicas sharing the task stream.
async fn replicas(
    s: &Sprinting,
    task: SocketAddr,
    database_url: &str,
    nats: &PrivateNats,
) -> Vec<Replica> {
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Replica::start(s, task, database_url, nats).await);
    }
    replicas
}

/// Exactly one status change per item, to DONE.
pub async fn assert_done_exactly_once(s: &Sprinting, items: &[String]) {
    for item in items {
        s.wait_for(item, BacklogItemStatus::Done, false).await;
    }
    let changes = s
        .status_changes(|c| items.iter().all(|item| c.contains_key(item)))
        .await;
    for item in items {
        let statuses: Vec<i32> = changes[item].iter().map(|c| c.new_status).collect();
        assert_eq!(
            statuses,
            vec![BacklogItemStatus::Done as i32],
            "item {item}: one transition, to DONE"
        );
    }
}

/// The stream holds every event of the task outbox exactly once, in feed order.
pub async fn assert_stream_holds_the_outbox_once(nats: &PrivateNats, task_db: &str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(task_db).await.unwrap();
    let outbox: HashSet<String> = sqlx::query_scalar("SELECT event_id FROM outbox")
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    pool.close().await;
    let messages = nats.messages(ServiceName::Task).await;
    let ids: HashSet<&String> = messages.iter().map(|(id, _)| id).collect();
    assert_eq!(
        ids.len(),
        messages.len(),
        "{} messages in the stream repeat a Nats-Msg-Id",
        messages.len() - ids.len()
    );
    assert_eq!(ids, outbox.iter().collect(), "one message per outbox event");
    // Positions are `<feed id>.<txid>.<seq>`, ordered by (txid, seq).
    let order = |position: &str| -> (i64, i64) {
        let mut parts = position.rsplit('.');
        let seq = parts.next().unwrap().parse().unwrap();
        let txid = parts.next().unwrap().parse().unwrap();
        (txid, seq)
    };
    for pair in messages.windows(2) {
        assert!(
            order(&pair[0].1) < order(&pair[1].1),
            "the stream is in feed order: {} before {}",
            pair[0].1,
            pair[1].1
        );
    }
}

async fn three_replicas_on_jetstream_finish_the_yardstick_and_the_race_exactly_once(
    engine: Engine,
) {
    let Some(nats) = PrivateNats::start_or_skip("three replicas on JetStream").await else {
        return;
    };
    let system = TestSystem::start_with_nats(
        engine,
        &[
            ServiceName::BacklogItem,
            ServiceName::Task,
            ServiceName::Planning,
        ],
        &[],
        nats.config(),
    )
    .await;
    let s = Sprinting::prepare(system, StatusTransitionMode::Automatic).await;
    let coordinator_db = TestDb::create(engine).await;
    let task = s.system.address(ServiceName::Task);
    let replicas = replicas(&s, task, coordinator_db.url(), &nats).await;

    // The yardstick: 12 tasks of 12 hours, DONE on the 144th estimate and not before.
    let (yardstick, tasks) = s.committed_item(12, 12).await;
    let sent = burn_down(&s, &yardstick, &tasks, 12, true).await;
    assert_eq!(sent, 144);
    // The race: 50 items whose last two tasks are finished at the same moment.
    let mut items = vec![yardstick];
    for _ in 0..50 {
        items.push(crate::coordinator::race_two_tasks_to_zero(&s).await.0);
    }
    assert_done_exactly_once(&s, &items).await;
    let mut working = 0;
    for replica in &replicas {
        if replica.events_processed().await > 0 {
            working += 1;
        }
    }
    assert!(
        working >= 2,
        "the replicas shared the work: {working} of 3 did any"
    );
    let task_db = s.system.database_url(ServiceName::Task);
    assert_stream_holds_the_outbox_once(&nats, &task_db).await;
    for replica in replicas {
        replica.kill().await;
    }
    s.system.stop().await;
}

/// The task service as a process of its own, relaying its outbox.
struct TaskProcess {
    child: Child,
    address: SocketAddr,
    database_url: String,
    backlog_item: SocketAddr,
    nats_url: String,
}

impl TaskProcess {
    fn spawn(&mut self) {
        self.child = spawn_task(
            self.address,
            &self.database_url,
            self.backlog_item,
            &[("AGILEPM_NATS_URL", self.nats_url.clone())],
        );
    }

    async fn kill_and_restart(&mut self) {
        self.child.start_kill().expect("SIGKILL the task service");
        let _ = self.child.wait().await;
        self.spawn();
        wait_serving(self.address, "the task service").await;
    }
}

const ITEMS: usize = 16;
const TASKS: usize = 6;
const HOURS: i32 = 6;

async fn killing_a_replica_the_relaying_service_and_nats_loses_and_doubles_nothing(engine: Engine) {
    let Some(mut nats) = PrivateNats::start_or_skip("faults on JetStream").await else {
        return;
    };
    let task_address = free_address();
    let system = TestSystem::start_with_nats(
        engine,
        &[ServiceName::BacklogItem, ServiceName::Planning],
        &[(ServiceName::Task, format!("http://{task_address}"))],
        nats.config(),
    )
    .await;
    let task_db = TestDb::migrated(engine, agilepm::system::migrations(ServiceName::Task)).await;
    let mut task = TaskProcess {
        child: spawn_task(
            task_address,
            task_db.url(),
            system.address(ServiceName::BacklogItem),
            &[("AGILEPM_NATS_URL", nats.url())],
        ),
        address: task_address,
        database_url: task_db.url().to_owned(),
        backlog_item: system.address(ServiceName::BacklogItem),
        nats_url: nats.url(),
    };
    wait_serving(task_address, "the task service").await;
    let mut s = Sprinting::prepare(system, StatusTransitionMode::Automatic).await;
    s.task_service = Some(task_address);
    let coordinator_db = TestDb::create(engine).await;
    let mut replicas = replicas(&s, task_address, coordinator_db.url(), &nats).await;

    let mut items = Vec::new();
    for _ in 0..ITEMS {
        items.push(s.committed_item(TASKS, HOURS).await);
    }
    // Eight clients estimate the tasks down, day by day; an estimate refused while the
    // task service is down is sent again until it is acknowledged.
    let total = ITEMS * TASKS * HOURS as usize;
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let workers = estimate_down(&s, &items, 8, HOURS, acknowledged.clone());
    let reach = |fraction: usize| {
        let acknowledged = acknowledged.clone();
        async move {
            while acknowledged.load(Ordering::Relaxed) < total * fraction / 4 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    reach(1).await;
    replicas.remove(0).kill().await;
    reach(2).await;
    task.kill_and_restart().await;
    reach(3).await;
    nats.kill_and_restart().await;
    for worker in workers {
        worker.await.unwrap();
    }
    assert_eq!(acknowledged.load(Ordering::Relaxed), total);
    let ids: Vec<String> = items.iter().map(|(item, _)| item.clone()).collect();
    // DONE means every task's last acknowledged estimate (0 hours) was reflected.
    assert_done_exactly_once(&s, &ids).await;
    assert_stream_holds_the_outbox_once(&nats, task_db.url()).await;
    for replica in replicas {
        replica.kill().await;
    }
    let _ = task.child.start_kill();
    s.system.stop().await;
}

/// Waits until `service`'s stream holds `count` messages (the relay caught up).
async fn wait_for_stream(nats: &PrivateNats, service: ServiceName, count: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let held = nats.messages(service).await.len();
        if held >= count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream holds {held} of {count} events after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two replicas of the task service on one database, both relaying: JetStream's fence
/// lets one publish at a time. The first is killed midway; the second, standing by or
/// racing it, relays the rest.
async fn two_relays_of_one_service_store_each_event_once_in_order(engine: Engine) {
    let Some(nats) = PrivateNats::start_or_skip("two relays").await else {
        return;
    };
    let (first, second) = (free_address(), free_address());
    let system = TestSystem::start_with_nats(
        engine,
        &[ServiceName::BacklogItem, ServiceName::Planning],
        &[(ServiceName::Task, format!("http://{first}"))],
        nats.config(),
    )
    .await;
    let task_db = TestDb::migrated(engine, agilepm::system::migrations(ServiceName::Task)).await;
    let relaying = [("AGILEPM_NATS_URL", nats.url())];
    let backlog_item = system.address(ServiceName::BacklogItem);
    let mut first_relay = spawn_task(first, task_db.url(), backlog_item, &relaying);
    wait_serving(first, "the first task replica").await;
    let mut s = Sprinting::prepare(system, StatusTransitionMode::Automatic).await;
    s.task_service = Some(first);
    let mut items = Vec::new();
    for _ in 0..8 {
        items.push(s.committed_item(4, 4).await);
    }
    let second_metrics = free_address();
    let mut second_relay = spawn_task(
        second,
        task_db.url(),
        backlog_item,
        &[
            relaying[0].clone(),
            ("AGILEPM_METRICS_ADDRESS", second_metrics.to_string()),
        ],
    );
    wait_serving(second, "the second task replica").await;
    let mut first_client = s.tasks();
    let mut second_client = TaskServiceClient::new(agilepm_testkit::channel(
        second,
        &agilepm_testkit::person_token("acme-team", "acme", &Role::TENANT_ROLES),
    ));
    // Each day's estimates alternate between the replicas; before the third day the
    // first is killed, and the second carries on alone.
    for day in 1..=4 {
        if day == 3 {
            first_relay.start_kill().expect("SIGKILL the first replica");
            let _ = first_relay.wait().await;
        }
        for (n, task) in items.iter().flat_map(|(_, tasks)| tasks).enumerate() {
            let client = if day < 3 && n % 2 == 0 {
                &mut first_client
            } else {
                &mut second_client
            };
            client
                .estimate_task_hours_remaining(estimate(task, 4 - day))
                .await
                .unwrap();
        }
    }
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(task_db.url()).await.unwrap();
    let events: i64 = sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    wait_for_stream(&nats, ServiceName::Task, events as usize).await;
    assert_stream_holds_the_outbox_once(&nats, task_db.url()).await;
    // The survivor says it is the active relay, caught up, and what it stored: at least
    // the last two days' estimates, written after the first was gone.
    let scrape = Scrape::of(second_metrics).await.unwrap();
    let task = [("service", "task")];
    assert_eq!(
        scrape.sum("agilepm_relay_active", &task),
        Some(1.0),
        "{}",
        scrape.text
    );
    assert_eq!(
        scrape.sum("agilepm_relay_behind", &task),
        Some(0.0),
        "{}",
        scrape.text
    );
    let stored = scrape
        .sum("agilepm_relay_events_total", &task)
        .unwrap_or(0.0);
    assert!(stored >= 64.0, "{stored} events stored by the survivor");
    let _ = second_relay.start_kill();
    let _ = second_relay.wait().await;
    s.system.stop().await;
}
