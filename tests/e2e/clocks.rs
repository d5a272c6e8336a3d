//! Time is a dependency (issue 36 §5): the services under a wall clock that steps forward
//! by hours and back by a day, as a resumed laptop or an NTP step on a VM does. The
//! backlog-item, task and coordinator services run as processes under libfaketime
//! (Debian's `faketime` package), all reading one offset file, so their wall clock steps
//! while their monotonic clock does not. Before, each kept sending the identity token it
//! minted by a monotonic timer after the wall clock said it had expired (or was not yet
//! valid): every call between them was UNAUTHENTICATED and reconciles stopped for
//! minutes. Now each item still becomes DONE within seconds of its last estimate.
//!
//! Days belong to the team (issue 36 §5): the services run under a clock set half an
//! hour before a midnight of a team in Los Angeles (when UTC's day is already the next),
//! then half an hour after it, then back: the team's undated estimates, its estimates'
//! latest date, its definitions and its burndown's days and today follow its own
//! midnight, while a team in UTC (the same services, the same moments) stays on UTC's
//! day.

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
use agilepm_proto::common::v1::StatusTransitionMode;
use agilepm_proto::planning::v1::release_service_client::ReleaseServiceClient;
use agilepm_proto::planning::v1::report_service_client::ReportServiceClient;
use agilepm_proto::planning::v1::sprint_service_client::SprintServiceClient;
use agilepm_proto::planning::v1::team_service_client::TeamServiceClient;
use agilepm_proto::planning::v1::{
    CommitBacklogItemToSprintRequest, GetSprintBurndownRequest,
    ScheduleBacklogItemForReleaseRequest, TeamSettings, UpdateTeamSettingsRequest,
};
use agilepm_proto::task::v1::task_service_client::TaskServiceClient;
use agilepm_proto::task::v1::{EstimateTaskHoursRemainingRequest, TaskView};
use agilepm_testkit::{Engine, TestDb, engine_tests};
use chrono::NaiveDate;
use tokio::process::Child;
use uuid::Uuid;

use crate::coordinator::plan_through;
use crate::crash::spawn_coordinator_with;
use crate::processes::{free_address, spawn_service, wait_serving};

engine_tests!(
    a_wall_clock_stepping_either_way_does_not_lock_the_services_out,
    a_team_s_days_turn_at_its_own_midnight,
);

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
        let to_tasks = channel_as(self.task, &person, "acme");
        let task = crate::given::task(to_tasks.clone(), &item.id, 1).await;
        let mut tasks = TaskServiceClient::new(to_tasks);
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
    if !libfaketime_present() {
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

/// Whether the tests under a shifted clock can run here; panics where CI requires them.
fn libfaketime_present() -> bool {
    if Path::new(LIBFAKETIME).exists() {
        return true;
    }
    assert!(
        std::env::var("AGILEPM_REQUIRE_FAKETIME").is_err(),
        "libfaketime is required (Debian's faketime package) but {LIBFAKETIME} is missing"
    );
    eprintln!("SKIPPED: libfaketime is not installed (Debian's faketime package)");
    false
}

/// The team in Los Angeles, and one that never set a zone (UTC).
const WEST: &str = "west";
const EAST: &str = "east";
const LOS_ANGELES: chrono_tz::Tz = chrono_tz::America::Los_Angeles;

/// Backlog-item, task and planning, each a process under the clock of `offsets`.
struct Planned {
    backlog_item: SocketAddr,
    task: SocketAddr,
    planning: SocketAddr,
    _processes: Vec<Child>,
    _databases: Vec<TestDb>,
}

impl Planned {
    async fn start(engine: Engine, offsets: &Path) -> Planned {
        let clock = shifted_clock(offsets);
        let mut databases = Vec::new();
        for _ in 0..3 {
            databases.push(TestDb::create(engine).await);
        }
        let (backlog_item, task, planning) = (free_address(), free_address(), free_address());
        let mut processes = vec![spawn_service(
            env!("CARGO_BIN_EXE_backlog-item-under-test"),
            backlog_item,
            databases[0].url(),
            &[],
            &clock,
        )];
        processes.push(spawn_service(
            env!("CARGO_BIN_EXE_task-under-test"),
            task,
            databases[1].url(),
            &[("AGILEPM_BACKLOG_ITEM_ENDPOINT", backlog_item)],
            &clock,
        ));
        processes.push(spawn_service(
            env!("CARGO_BIN_EXE_planning-under-test"),
            planning,
            databases[2].url(),
            &[
                ("AGILEPM_BACKLOG_ITEM_ENDPOINT", backlog_item),
                ("AGILEPM_TASK_ENDPOINT", task),
            ],
            &clock,
        ));
        for (address, what) in [
            (backlog_item, "backlog-item"),
            (task, "task"),
            (planning, "planning"),
        ] {
            wait_serving(address, &format!("{what} under a shifted clock")).await;
        }
        Planned {
            backlog_item,
            task,
            planning,
            _processes: processes,
            _databases: databases,
        }
    }

    fn as_person(&self, address: SocketAddr, tenant: &str) -> PeerChannel {
        let person = TokenSpec::person(&format!("{tenant}-po"), tenant, &Role::TENANT_ROLES);
        channel_as(address, &person, tenant)
    }

    fn tasks(&self, tenant: &str) -> TaskServiceClient<PeerChannel> {
        TaskServiceClient::new(self.as_person(self.task, tenant))
    }

    /// A product of `tenant` with a release and a sprint over `first`..`last`, and an item
    /// committed to it with one task of 8 hours; (sprint id, task id).
    async fn sprint_with_a_task(
        &self,
        tenant: &str,
        first: NaiveDate,
        last: NaiveDate,
    ) -> (String, String) {
        let planning = self.as_person(self.planning, tenant);
        let rid = || Uuid::new_v4().to_string();
        let (product, release, sprint) = plan_through(
            planning.clone(),
            StatusTransitionMode::Automatic,
            first.to_string(),
            last.to_string(),
        )
        .await;
        let item = BacklogItemServiceClient::new(self.as_person(self.backlog_item, tenant))
            .plan_backlog_item(PlanBacklogItemRequest {
                request_id: rid(),
                product_id: product.id.clone(),
                summary: "a story".into(),
                ..Default::default()
            })
            .await
            .expect("plan an item")
            .into_inner()
            .backlog_item
            .unwrap();
        ReleaseServiceClient::new(planning.clone())
            .schedule_backlog_item_for_release(ScheduleBacklogItemForReleaseRequest {
                release_id: release.id,
                backlog_item_id: item.id.clone(),
                expected_version: None,
            })
            .await
            .expect("schedule the item");
        SprintServiceClient::new(planning)
            .commit_backlog_item_to_sprint(CommitBacklogItemToSprintRequest {
                sprint_id: sprint.id.clone(),
                backlog_item_id: item.id.clone(),
                expected_version: None,
            })
            .await
            .expect("commit the item");
        let to_tasks = self.as_person(self.task, tenant);
        let task = crate::given::task(to_tasks, &item.id, 8).await;
        (sprint.id, task.id)
    }

    /// Estimates `task` of `tenant` at `hours` for `date` (empty: undated); the task's
    /// log after, as (date, hours).
    async fn estimate(
        &self,
        tenant: &str,
        task: &str,
        hours: i32,
        date: &str,
    ) -> Result<Vec<(String, i32)>, tonic::Status> {
        let task = self
            .tasks(tenant)
            .estimate_task_hours_remaining(EstimateTaskHoursRemainingRequest {
                id: task.into(),
                hours_remaining: hours,
                date: date.into(),
                view: TaskView::Full as i32,
                ..Default::default()
            })
            .await?
            .into_inner()
            .task
            .unwrap();
        Ok(task
            .estimation_log
            .into_iter()
            .map(|entry| (entry.date, entry.hours_remaining))
            .collect())
    }

    /// `tenant`'s burndown of `sprint`: its today, its zone, and (date, hours) per day.
    async fn burndown(&self, tenant: &str, sprint: &str) -> (String, String, Vec<(String, i64)>) {
        let burndown = ReportServiceClient::new(self.as_person(self.planning, tenant))
            .get_sprint_burndown(GetSprintBurndownRequest {
                sprint_id: sprint.into(),
            })
            .await
            .expect("read the burndown")
            .into_inner();
        let days = burndown
            .days
            .into_iter()
            .map(|day| (day.date, day.hours_remaining))
            .collect();
        (burndown.today, burndown.time_zone, days)
    }
}

/// The clock offset (`+N`/`-N` seconds, libfaketime's relative form) that puts the
/// services' wall clock at `at`.
fn offset_to(at: chrono::DateTime<chrono::Utc>) -> String {
    let seconds = (at - chrono::Utc::now()).num_seconds();
    format!("{seconds:+}")
}

fn dated(entries: &[(&str, i32)]) -> Vec<(String, i32)> {
    entries.iter().map(|(d, h)| ((*d).to_owned(), *h)).collect()
}

async fn a_team_s_days_turn_at_its_own_midnight(engine: Engine) {
    if !libfaketime_present() {
        return;
    }
    use chrono::{TimeZone, Utc};
    // The next midnight in Los Angeles at least an hour away; half an hour either side of
    // it, UTC's date is the same (LA's midnight is 07:00 or 08:00 UTC).
    let soon = Utc::now().with_timezone(&LOS_ANGELES) + chrono::Duration::hours(1);
    let local_day = soon.date_naive() + chrono::Days::new(1);
    let midnight = LOS_ANGELES
        .from_local_datetime(&local_day.and_hms_opt(0, 0, 0).unwrap())
        .single()
        .expect("Los Angeles has one midnight a day")
        .with_timezone(&Utc);
    let before = midnight - chrono::Duration::minutes(30);
    let after = midnight + chrono::Duration::minutes(30);
    let (west_yesterday, west_today) = (local_day.pred_opt().unwrap(), local_day);
    let utc_today = before.date_naive();
    assert_eq!(utc_today, after.date_naive());
    assert_eq!(utc_today, west_today, "UTC's day has turned before LA's");
    let (yesterday, today, tomorrow) = (
        west_yesterday.to_string(),
        west_today.to_string(),
        (west_today + chrono::Days::new(1)).to_string(),
    );

    let dir = tempfile::tempdir().unwrap();
    let offsets: PathBuf = dir.path().join("offset");
    step_to(&offsets, &offset_to(before));
    let services = Planned::start(engine, &offsets).await;

    // 23:30 in Los Angeles, 07:30 (or 06:30) UTC the next day.
    let settings = TeamServiceClient::new(services.as_person(services.planning, WEST))
        .update_team_settings(UpdateTeamSettingsRequest {
            settings: Some(TeamSettings {
                time_zone: "America/Los_Angeles".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["time_zone".into()],
            }),
            expected_version: Some(0),
        })
        .await
        .expect("set the west team's zone")
        .into_inner()
        .settings
        .unwrap();
    assert_eq!(
        (settings.time_zone.as_str(), settings.version),
        ("America/Los_Angeles", 1)
    );
    let first = west_yesterday - chrono::Days::new(2);
    let last = west_today + chrono::Days::new(3);
    let (west_sprint, west_task) = services.sprint_with_a_task(WEST, first, last).await;
    let (east_sprint, east_task) = services.sprint_with_a_task(EAST, first, last).await;

    // The definition logged 8 hours on each team's own today; an undated estimate too.
    assert_eq!(
        services.estimate(WEST, &west_task, 5, "").await.unwrap(),
        dated(&[(&yesterday, 5)]),
        "the west team's evening estimate is on its own day, not UTC's"
    );
    assert_eq!(
        services.estimate(EAST, &east_task, 5, "").await.unwrap(),
        dated(&[(&today, 5)])
    );
    // The latest date is the team's today plus one.
    let refused = services
        .estimate(WEST, &west_task, 4, &tomorrow)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains(&format!(
            "at most {today} (the team's today, {yesterday} in America/Los_Angeles"
        )),
        "{}",
        refused.message()
    );
    // The burndown counts the west item from the day it was committed there.
    let (west_burndown_today, zone, days) = services.burndown(WEST, &west_sprint).await;
    assert_eq!(
        (west_burndown_today.as_str(), zone.as_str()),
        (yesterday.as_str(), "America/Los_Angeles")
    );
    let hours_on = |days: &[(String, i64)], day: &str| {
        days.iter()
            .find(|(d, _)| d == day)
            .map(|(_, h)| *h)
            .unwrap_or_else(|| panic!("no burndown day {day} in {days:?}"))
    };
    assert_eq!(hours_on(&days, &yesterday), 5);
    let (east_burndown_today, zone, days) = services.burndown(EAST, &east_sprint).await;
    assert_eq!(
        (east_burndown_today.as_str(), zone.as_str()),
        (today.as_str(), "UTC")
    );
    assert_eq!(
        hours_on(&days, &yesterday),
        0,
        "the east item joined on UTC's today"
    );
    assert_eq!(hours_on(&days, &today), 5);

    // Forward, past the west team's midnight: its day has turned, UTC's has not.
    step_to(&offsets, &offset_to(after));
    assert_eq!(
        services.estimate(WEST, &west_task, 3, "").await.unwrap(),
        dated(&[(&yesterday, 5), (&today, 3)]),
        "after its midnight the west team's estimate is on its new day"
    );
    assert_eq!(
        services.estimate(EAST, &east_task, 2, "").await.unwrap(),
        dated(&[(&today, 2)]),
        "the east team's day has not turned"
    );
    assert_eq!(
        services
            .estimate(WEST, &west_task, 3, &tomorrow)
            .await
            .unwrap(),
        dated(&[(&yesterday, 5), (&today, 3), (&tomorrow, 3)]),
        "the west team's tomorrow is within its bound now"
    );
    let (west_burndown_today, _, days) = services.burndown(WEST, &west_sprint).await;
    assert_eq!(west_burndown_today, today);
    assert_eq!(hours_on(&days, &today), 3);

    // Back again, before the west team's midnight: an undated estimate is for its
    // yesterday once more, and corrects that day only.
    step_to(&offsets, &offset_to(before));
    assert_eq!(
        services.estimate(WEST, &west_task, 6, "").await.unwrap(),
        dated(&[(&yesterday, 6), (&today, 3), (&tomorrow, 3)]),
        "the clock stepped back: the team's today is its yesterday again"
    );
    let (west_burndown_today, _, days) = services.burndown(WEST, &west_sprint).await;
    assert_eq!(west_burndown_today, yesterday);
    assert_eq!(hours_on(&days, &yesterday), 6);
    assert_eq!(hours_on(&days, &today), 3);
}
