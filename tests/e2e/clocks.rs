//! Time is a dependency (issue 36 §5): the services under a wall clock that steps forward
//! by hours and back by a day, as a resumed laptop or an NTP step on a VM does. The
//! backlog-item, task and coordinator services run as processes under libfaketime
//! (Debian's `faketime` package), all reading one offset file, so their wall clock steps
//! while their monotonic clock does not. Before, each kept sending the identity token it
//! minted by a monotonic timer after the wall clock said it had expired (or was not yet
//! valid): every call between them was UNAUTHENTICATED and reconciles stopped for
//! minutes. Now each item still becomes DONE within seconds of its last estimate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agilepm_platform::wire::auth::{Role, TokenSpec};
use agilepm_platform::wire::client::PeerChannel;
use agilepm_platform::wire::config::ServiceName;
use agilepm_proto::backlog::v1::backlog_item_service_client::BacklogItemServiceClient;
use agilepm_proto::backlog::v1::{
    BacklogItemStatus, CommitBacklogItemRequest, GetBacklogItemRequest, PlanBacklogItemRequest,
    ProductFacts, ScheduleBacklogItemRequest, SyncProductsRequest,
};
use agilepm_proto::task::v1::task_service_client::TaskServiceClient;
use agilepm_proto::task::v1::{DefineTaskRequest, EstimateTaskHoursRemainingRequest};
use agilepm_testkit::{Engine, TestDb, engine_tests};
use tokio::process::Child;
use uuid::Uuid;

use crate::crash::spawn_coordinator_with;
use crate::processes::{free_address, spawn_service, wait_serving};

engine_tests!(a_wall_clock_stepping_either_way_does_not_lock_the_services_out);

/// Where Debian's libfaketime lives.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// libfaketime's settings for a process whose wall clock follows `offsets`.
fn shifted_clock(offsets: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("LD_PRELOAD", LIBFAKETIME.into()),
        ("FAKETIME_TIMESTAMP_FILE", offsets.display().to_string()),
        // Read the offset on every call, so a step takes effect at once.
        ("FAKETIME_NO_CACHE", "1".into()),
        // A step of the wall clock, as NTP makes one: timers do not jump.
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".into()),
    ]
}

/// A token verified whatever the shifted clocks say within three days of now: minted as
/// of two days ago, valid for five.
fn lasting_token(spec: &TokenSpec) -> String {
    let two_days_ago = chrono::Utc::now().timestamp() as u64 - 2 * 86_400;
    agilepm_testkit::test_auth()
        .signer()
        .and_then(|signer| signer.mint_at(spec, Duration::from_secs(5 * 86_400), two_days_ago))
        .expect("mint a lasting token")
}

fn channel_as(address: SocketAddr, spec: &TokenSpec, tenant: &str) -> PeerChannel {
    agilepm_platform::wire::client::connect_lazy_acting_for(
        &format!("http://{address}"),
        agilepm_platform::wire::auth::Credentials::fixed(&lasting_token(spec)).unwrap(),
        tenant,
    )
    .unwrap()
}

/// The three services, each a process under the clock of `offsets`.
struct Shifted {
    backlog_item: SocketAddr,
    task: SocketAddr,
    _processes: Vec<Child>,
    _databases: Vec<TestDb>,
}

impl Shifted {
    async fn start(engine: Engine, offsets: &Path) -> Shifted {
        let clock = shifted_clock(offsets);
        let databases = vec![
            TestDb::create(engine).await,
            TestDb::create(engine).await,
            TestDb::create(engine).await,
        ];
        let backlog_item = free_address();
        let task = free_address();
        let coordinator = free_address();
        let mut processes = vec![spawn_service(
            env!("CARGO_BIN_EXE_backlog-item-under-test"),
            backlog_item,
            databases[0].url(),
            &[],
            &clock,
        )];
        wait_serving(backlog_item, "backlog-item under a shifted clock").await;
        processes.push(spawn_service(
            env!("CARGO_BIN_EXE_task-under-test"),
            task,
            databases[1].url(),
            &[("AGILEPM_BACKLOG_ITEM_ENDPOINT", backlog_item)],
            &clock,
        ));
        let mut env = clock.clone();
        env.push(("AGILEPM_LISTEN", coordinator.to_string()));
        processes.push(spawn_coordinator_with(
            backlog_item,
            task,
            databases[2].url(),
            &env,
            None,
        ));
        wait_serving(task, "task under a shifted clock").await;
        wait_serving(coordinator, "the coordinator under a shifted clock").await;
        Shifted {
            backlog_item,
            task,
            _processes: processes,
            _databases: databases,
        }
    }

    /// An item of a new product, committed with one task of one hour, estimated to 0;
    /// returns how long the item took to become DONE after the estimate was answered.
    async fn finish_an_item(&self) -> Duration {
        let planning = TokenSpec::service(ServiceName::Planning);
        let person = TokenSpec::person("ann", "acme", &Role::TENANT_ROLES);
        let mut as_planning =
            BacklogItemServiceClient::new(channel_as(self.backlog_item, &planning, "acme"));
        let product_id = Uuid::now_v7().to_string();
        as_planning
            .sync_products(SyncProductsRequest {
                products: vec![ProductFacts {
                    product_id: product_id.clone(),
                    status_transition_mode: 1,
                    product_version: 1,
                }],
            })
            .await
            .expect("record the product");
        let mut items =
            BacklogItemServiceClient::new(channel_as(self.backlog_item, &person, "acme"));
        let item = items
            .plan_backlog_item(PlanBacklogItemRequest {
                request_id: Uuid::new_v4().to_string(),
                product_id,
                summary: "a story".into(),
                ..Default::default()
            })
            .await
            .expect("plan")
            .into_inner()
            .backlog_item
            .unwrap();
        as_planning
            .schedule_backlog_item(ScheduleBacklogItemRequest {
                id: item.id.clone(),
                release_id: Uuid::now_v7().to_string(),
                expected_version: None,
            })
            .await
            .expect("schedule");
        as_planning
            .commit_backlog_item(CommitBacklogItemRequest {
                id: item.id.clone(),
                sprint_id: Uuid::now_v7().to_string(),
                expected_version: None,
            })
            .await
            .expect("commit");
        // The task service checks the item with backlog-item under its own identity.
        let mut tasks = TaskServiceClient::new(channel_as(self.task, &person, "acme"));
        let task = tasks
            .define_task(DefineTaskRequest {
                request_id: Uuid::new_v4().to_string(),
                backlog_item_id: item.id.clone(),
                name: "the work".into(),
                hours_remaining: 1,
                ..Default::default()
            })
            .await
            .expect("define a task (task calls backlog-item)")
            .into_inner()
            .task
            .unwrap();
        tasks
            .estimate_task_hours_remaining(EstimateTaskHoursRemainingRequest {
                id: task.id,
                hours_remaining: 0,
                ..Default::default()
            })
            .await
            .expect("estimate");
        let answered = tokio::time::Instant::now();
        let deadline = answered + Duration::from_secs(20);
        loop {
            let now = items
                .get_backlog_item(GetBacklogItemRequest {
                    id: item.id.clone(),
                    consistency_token: String::new(),
                })
                .await
                .expect("read the item")
                .into_inner()
                .backlog_item
                .unwrap();
            if now.status == BacklogItemStatus::Done as i32 {
                return answered.elapsed();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the item is not DONE 20 s after its last estimate: the coordinator cannot \
                 reach backlog-item under the stepped clock"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn step_to(offsets: &Path, offset: &str) {
    std::fs::write(offsets, offset).expect("write the clock offset");
}

async fn a_wall_clock_stepping_either_way_does_not_lock_the_services_out(engine: Engine) {
    if !Path::new(LIBFAKETIME).exists() {
        assert!(
            std::env::var("AGILEPM_REQUIRE_FAKETIME").is_err(),
            "libfaketime is required (Debian's faketime package) but {LIBFAKETIME} is missing"
        );
        eprintln!("SKIPPED: libfaketime is not installed (Debian's faketime package)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let offsets: PathBuf = dir.path().join("offset");
    step_to(&offsets, "+0");
    let services = Shifted::start(engine, &offsets).await;
    let on_time = services.finish_an_item().await;
    // Forward by three hours: far past the services' 10-minute identity tokens.
    step_to(&offsets, "+3h");
    let forward = services.finish_an_item().await;
    // Back by a day: every token minted so far is not yet valid.
    step_to(&offsets, "-1d");
    let backward = services.finish_an_item().await;
    println!(
        "{engine:?}: an item DONE {on_time:?} after its last estimate; {forward:?} after the \
         clock stepped 3 h forward; {backward:?} after it stepped a day back"
    );
    for (what, took) in [("forward", forward), ("backward", backward)] {
        assert!(
            took < Duration::from_secs(5),
            "{what}: the item took {took:?} to become DONE"
        );
    }
}
