//! The whole system over real gRPC, on both engines: backlog item status follows task
//! hours through the coordinator, exactly once in effect (docs/design.md §3 and §7).

use std::collections::HashMap;
use std::time::Duration;

use agilepm_platform::wire::client::PeerChannel;
use agilepm_platform::wire::config::ServiceName;
use agilepm_proto::backlog::v1::backlog_item_service_client::BacklogItemServiceClient;
use agilepm_proto::backlog::v1::{
    BacklogItem, BacklogItemStatus, BacklogItemStatusChanged, GetBacklogItemRequest,
    ListBacklogItemsRequest, MarkBacklogItemDoneRequest, PlanBacklogItemRequest, StatusChangeCause,
};
use agilepm_proto::common::v1::StatusTransitionMode;
use agilepm_proto::coordinator::v1::coordinator_service_client::CoordinatorServiceClient;
use agilepm_proto::coordinator::v1::{
    GetCoordinatorStatusRequest, GetCoordinatorStatusResponse, ListParkedItemsRequest,
    ListPoisonEventsRequest, ParkedItem, RetryParkedItemRequest, SkipParkedItemRequest,
    SkipPoisonEventRequest,
};
use agilepm_proto::events::v1::event_feed_service_client::EventFeedServiceClient;
use agilepm_proto::events::v1::{SubscribeRequest, subscribe_response};
use agilepm_proto::planning::v1::product_service_client::ProductServiceClient;
use agilepm_proto::planning::v1::release_service_client::ReleaseServiceClient;
use agilepm_proto::planning::v1::sprint_service_client::SprintServiceClient;
use agilepm_proto::planning::v1::*;
use agilepm_proto::task::v1::task_service_client::TaskServiceClient;
use agilepm_proto::task::v1::{
    DefineTaskRequest, EstimateTaskHoursRemainingRequest, RemoveTaskRequest,
};
use agilepm_testkit::{Engine, TestSystem, day, engine_tests};
use futures::StreamExt as _;
use rand::seq::SliceRandom as _;
use uuid::Uuid;

engine_tests!(
    the_yardstick_sprint_finishes_exactly_once,
    twenty_four_tasks_of_six_hours_and_story_point_style,
    reopening_a_finished_task_reopens_the_item,
    two_last_tasks_finished_at_once_still_end_done,
    manual_mode_flags_and_waits_for_a_person,
    removing_and_discovering_work_moves_status,
    a_poisoned_item_parks_alone_while_every_other_item_flows,
    a_read_with_a_consistency_token_is_never_stale,
);

/// The whole system, and a product with a release and a sprint to commit items to.
pub struct Sprinting {
    pub system: TestSystem,
    pub product: Product,
    pub release: Release,
    pub sprint: Sprint,
    /// Where the task service runs when it is a process of its own, not in `system`.
    pub task_service: Option<std::net::SocketAddr>,
}

fn rid() -> String {
    Uuid::new_v4().to_string()
}

/// A product, a release around today and a sprint from `begin` to `end`, made by the
/// holder of `token`.
pub async fn plan(
    system: &TestSystem,
    mode: StatusTransitionMode,
    token: &str,
    begin: String,
    end: String,
) -> (Product, Release, Sprint) {
    plan_through(
        system.channel(ServiceName::Planning, token),
        mode,
        begin,
        end,
    )
    .await
}

/// Like [`plan`], through `planning` (a channel to a planning service wherever it runs).
pub async fn plan_through(
    planning: PeerChannel,
    mode: StatusTransitionMode,
    begin: String,
    end: String,
) -> (Product, Release, Sprint) {
    let product = Product {
        name: format!("P {}", rid()),
        status_transition_mode: mode as i32,
        ..Default::default()
    };
    let product = ProductServiceClient::new(planning.clone())
        .create_product(CreateProductRequest {
            request_id: rid(),
            product: Some(product),
        })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    let release = Release {
        product_id: product.id.clone(),
        name: "R".into(),
        begin_date: day(-30),
        end_date: day(60),
        ..Default::default()
    };
    let release = ReleaseServiceClient::new(planning.clone())
        .schedule_release(ScheduleReleaseRequest {
            request_id: rid(),
            release: Some(release),
        })
        .await
        .unwrap()
        .into_inner()
        .release
        .unwrap();
    let sprint = Sprint {
        product_id: product.id.clone(),
        name: "S".into(),
        begin_date: begin,
        end_date: end,
        ..Default::default()
    };
    let sprint = SprintServiceClient::new(planning)
        .schedule_sprint(ScheduleSprintRequest {
            request_id: rid(),
            sprint: Some(sprint),
        })
        .await
        .unwrap()
        .into_inner()
        .sprint
        .unwrap();
    (product, release, sprint)
}

impl Sprinting {
    pub async fn start(engine: Engine, mode: StatusTransitionMode) -> Sprinting {
        let system = TestSystem::start(engine, &ServiceName::ALL).await;
        Sprinting::prepare(system, mode).await
    }

    pub async fn prepare(system: TestSystem, mode: StatusTransitionMode) -> Sprinting {
        Sprinting::prepare_as(system, mode, "acme").await
    }

    /// A product, a release and a sprint, made by the holder of `token`.
    pub async fn prepare_as(
        system: TestSystem,
        mode: StatusTransitionMode,
        token: &str,
    ) -> Sprinting {
        let (product, release, sprint) = plan(&system, mode, token, day(-5), day(6)).await;
        Sprinting {
            system,
            product,
            release,
            sprint,
            task_service: None,
        }
    }

    /// Points the helpers at a new product of tenant acme whose sprint runs from `begin`
    /// to `end` (the items committed from now on go there).
    pub async fn replan(&mut self, mode: StatusTransitionMode, begin: String, end: String) {
        (self.product, self.release, self.sprint) =
            plan(&self.system, mode, "acme", begin, end).await;
    }

    pub fn items(&self) -> BacklogItemServiceClient<PeerChannel> {
        BacklogItemServiceClient::new(self.system.channel(ServiceName::BacklogItem, "acme"))
    }

    pub fn tasks(&self) -> TaskServiceClient<PeerChannel> {
        TaskServiceClient::new(match self.task_service {
            // A process of its own verifies signed tokens only.
            Some(address) => agilepm_testkit::channel(
                address,
                &agilepm_testkit::person_token(
                    "acme-team",
                    "acme",
                    &agilepm_platform::wire::auth::Role::TENANT_ROLES,
                ),
            ),
            None => self.system.channel(ServiceName::Task, "acme"),
        })
    }

    /// A backlog item of the product scheduled for its release, not committed.
    pub async fn scheduled_item(&self) -> String {
        let item = self
            .items()
            .plan_backlog_item(PlanBacklogItemRequest {
                request_id: rid(),
                product_id: self.product.id.clone(),
                summary: "story".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .backlog_item
            .unwrap();
        ReleaseServiceClient::new(self.system.channel(ServiceName::Planning, "acme"))
            .schedule_backlog_item_for_release(ScheduleBacklogItemForReleaseRequest {
                release_id: self.release.id.clone(),
                backlog_item_id: item.id.clone(),
                expected_version: None,
            })
            .await
            .unwrap();
        item.id
    }

    /// A backlog item committed to the sprint, with `tasks` tasks of `hours` each.
    pub async fn committed_item(&self, tasks: usize, hours: i32) -> (String, Vec<String>) {
        let item = self.scheduled_item().await;
        SprintServiceClient::new(self.system.channel(ServiceName::Planning, "acme"))
            .commit_backlog_item_to_sprint(CommitBacklogItemToSprintRequest {
                sprint_id: self.sprint.id.clone(),
                backlog_item_id: item.clone(),
                expected_version: None,
            })
            .await
            .unwrap();
        let mut ids = Vec::new();
        for n in 0..tasks {
            let request = DefineTaskRequest {
                request_id: rid(),
                backlog_item_id: item.clone(),
                name: format!("task {n}"),
                hours_remaining: hours,
                ..Default::default()
            };
            ids.push(
                self.tasks()
                    .define_task(request)
                    .await
                    .unwrap()
                    .into_inner()
                    .task
                    .unwrap()
                    .id,
            );
        }
        (item, ids)
    }

    pub async fn item(&self, id: &str) -> BacklogItem {
        self.items()
            .get_backlog_item(GetBacklogItemRequest {
                id: id.into(),
                consistency_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .backlog_item
            .unwrap()
    }

    /// Waits until the item reaches `status` (and `awaiting`), failing after 20 s.
    pub async fn wait_for(
        &self,
        id: &str,
        status: BacklogItemStatus,
        awaiting: bool,
    ) -> BacklogItem {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let item = self.item(id).await;
            if item.status == status as i32 && item.awaiting_acceptance == awaiting {
                return item;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "item {id} is {:?}, awaiting {}, not {status:?}",
                item.status,
                item.awaiting_acceptance
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every status change the coordinator caused (cause TASK_HOURS) on the backlog-item
    /// feed, per item: read until `complete` holds, then on to the head as it is then, so
    /// any extra (duplicate) change would be seen too.
    pub async fn status_changes(
        &self,
        complete: impl Fn(&HashMap<String, Vec<BacklogItemStatusChanged>>) -> bool,
    ) -> HashMap<String, Vec<BacklogItemStatusChanged>> {
        let mut feed =
            EventFeedServiceClient::new(self.system.channel(ServiceName::BacklogItem, "acme"));
        let request = SubscribeRequest {
            event_types: vec!["agilepm.backlog.v1.BacklogItemStatusChanged".into()],
            heartbeat_interval_ms: 100,
            ..Default::default()
        };
        let mut stream = feed.subscribe(request).await.unwrap().into_inner();
        let mut changes: HashMap<String, Vec<BacklogItemStatusChanged>> = HashMap::new();
        let mut head: Option<String> = None;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let message = tokio::time::timeout_at(deadline, stream.next())
                .await
                .unwrap_or_else(|_| {
                    panic!("the expected status changes never arrived: {changes:?}")
                })
                .unwrap()
                .unwrap();
            match message.kind {
                Some(subscribe_response::Kind::Event(event)) => {
                    let change: BacklogItemStatusChanged =
                        prost::Message::decode(event.payload.unwrap().value.as_slice()).unwrap();
                    if change.cause == StatusChangeCause::TaskHours as i32 {
                        changes
                            .entry(change.backlog_item_id.clone())
                            .or_default()
                            .push(change);
                    }
                }
                Some(subscribe_response::Kind::Heartbeat(beat)) => {
                    if head.is_none() && complete(&changes) {
                        let now = feed
                            .get_feed_head(agilepm_proto::events::v1::GetFeedHeadRequest {})
                            .await
                            .unwrap();
                        head = Some(now.into_inner().head_position);
                    }
                    if head.as_deref() == Some(beat.scanned_position.as_str()) {
                        return changes;
                    }
                }
                None => {}
            }
        }
    }
}

/// `workers` clients estimating the tasks of `items` down from `hours` to 0, day by day,
/// interleaved (item `n`'s tasks go to client `n % workers`), counting acknowledged
/// estimates in `acknowledged`. An estimate refused while the task service is away is sent
/// again until it is acknowledged (within 60 s); any other refusal fails the test.
pub fn estimate_down(
    s: &Sprinting,
    items: &[(String, Vec<String>)],
    workers: usize,
    hours: i32,
    acknowledged: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..workers)
        .map(|worker| {
            let mut client = s.tasks();
            let mine: Vec<String> = items
                .iter()
                .skip(worker)
                .step_by(workers)
                .flat_map(|(_, tasks)| tasks.clone())
                .collect();
            let acknowledged = acknowledged.clone();
            tokio::spawn(async move {
                for day in 1..=hours {
                    for task in &mine {
                        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                        while let Err(status) = client
                            .estimate_task_hours_remaining(estimate(task, hours - day))
                            .await
                        {
                            assert!(
                                matches!(
                                    status.code(),
                                    tonic::Code::Unavailable
                                        | tonic::Code::Cancelled
                                        | tonic::Code::Unknown
                                ),
                                "only an outage may refuse an estimate: {status:?}"
                            );
                            assert!(
                                tokio::time::Instant::now() < deadline,
                                "the task service never came back"
                            );
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        acknowledged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
        })
        .collect()
}

/// An estimate for today (the server's): each one is its task's latest entry, so each
/// moves the task's current hours, which is what the coordinator acts on.
pub fn estimate(id: &str, hours: i32) -> EstimateTaskHoursRemainingRequest {
    EstimateTaskHoursRemainingRequest {
        view: 0,
        id: id.into(),
        hours_remaining: hours,
        date: String::new(),
        expected_version: None,
    }
}

/// Every task estimated down one hour at a time, in an order shuffled across tasks but
/// monotone per task; returns the number of estimates sent.
pub async fn burn_down(
    s: &Sprinting,
    item: &str,
    tasks: &[String],
    hours: i32,
    check_not_done: bool,
) -> usize {
    let mut plan: Vec<(String, i32)> = tasks
        .iter()
        .flat_map(|t| (0..hours).rev().map(move |h| (t.clone(), h)))
        .collect();
    // Shuffle, then restore each task's own order (descending hours) in the slots it got.
    plan.shuffle(&mut rand::rng());
    let mut per_task: HashMap<String, Vec<i32>> = HashMap::new();
    for (task, hour) in &plan {
        per_task.entry(task.clone()).or_default().push(*hour);
    }
    for hours in per_task.values_mut() {
        hours.sort_unstable_by(|a, b| b.cmp(a));
        hours.reverse();
    }
    let mut client = s.tasks();
    let total = plan.len();
    for (n, (task, _)) in plan.iter().enumerate() {
        let hour = per_task.get_mut(task).unwrap().pop().unwrap();
        client
            .estimate_task_hours_remaining(estimate(task, hour))
            .await
            .unwrap();
        if check_not_done && n + 1 < total && n % 12 == 0 {
            assert_ne!(
                s.item(item).await.status,
                BacklogItemStatus::Done as i32,
                "DONE before the last estimate ({n})"
            );
        }
    }
    total
}

async fn yardstick(engine: Engine, tasks: usize, hours: i32) {
    let s = Sprinting::start(engine, StatusTransitionMode::Automatic).await;
    let (item, task_ids) = s.committed_item(tasks, hours).await;
    let sent = burn_down(&s, &item, &task_ids, hours, true).await;
    assert_eq!(sent, tasks * hours as usize);
    s.wait_for(&item, BacklogItemStatus::Done, false).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let changes = s
        .status_changes(|c| c.contains_key(&item))
        .await
        .remove(&item)
        .unwrap_or_default();
    assert_eq!(changes.len(), 1, "exactly one transition: {changes:?}");
    assert_eq!(changes[0].new_status, BacklogItemStatus::Done as i32);
    // The basis of the transition is the state after the last estimate: every define and
    // every estimate bumped the revision once.
    assert_eq!(
        changes[0].task_revision,
        (tasks + tasks * hours as usize) as i64
    );
    assert_eq!(changes[0].task_hours_remaining, 0);
    s.system.stop().await;
}

async fn the_yardstick_sprint_finishes_exactly_once(engine: Engine) {
    yardstick(engine, 12, 12).await;
}

async fn twenty_four_tasks_of_six_hours_and_story_point_style(engine: Engine) {
    yardstick(engine, 24, 6).await;
    yardstick(engine, 1, 1).await;
}

async fn reopening_a_finished_task_reopens_the_item(engine: Engine) {
    let s = Sprinting::start(engine, StatusTransitionMode::Automatic).await;
    let (item, tasks) = s.committed_item(2, 1).await;
    let mut client = s.tasks();
    for task in &tasks {
        client
            .estimate_task_hours_remaining(estimate(task, 0))
            .await
            .unwrap();
    }
    s.wait_for(&item, BacklogItemStatus::Done, false).await;
    client
        .estimate_task_hours_remaining(estimate(&tasks[0], 1))
        .await
        .unwrap();
    s.wait_for(&item, BacklogItemStatus::Committed, false).await;
    client
        .estimate_task_hours_remaining(estimate(&tasks[0], 0))
        .await
        .unwrap();
    s.wait_for(&item, BacklogItemStatus::Done, false).await;
    let changes = s
        .status_changes(|c| c.get(&item).is_some_and(|v| v.len() >= 3))
        .await
        .remove(&item)
        .unwrap();
    let statuses: Vec<i32> = changes.iter().map(|c| c.new_status).collect();
    assert_eq!(
        statuses,
        vec![
            BacklogItemStatus::Done as i32,
            BacklogItemStatus::Committed as i32,
            BacklogItemStatus::Done as i32
        ]
    );
    s.system.stop().await;
}

/// The race: an item whose two tasks (of one hour) two clients finish at the same moment.
pub async fn race_two_tasks_to_zero(s: &Sprinting) -> (String, Vec<String>) {
    let (item, tasks) = s.committed_item(2, 1).await;
    let (mut a, mut b) = (s.tasks(), s.tasks());
    let (ra, rb) = tokio::join!(
        a.estimate_task_hours_remaining(estimate(&tasks[0], 0)),
        b.estimate_task_hours_remaining(estimate(&tasks[1], 0))
    );
    ra.unwrap();
    rb.unwrap();
    (item, tasks)
}

async fn two_last_tasks_finished_at_once_still_end_done(engine: Engine) {
    let s = Sprinting::start(engine, StatusTransitionMode::Automatic).await;
    let mut items = Vec::new();
    for _ in 0..50 {
        items.push(race_two_tasks_to_zero(&s).await);
    }
    for (item, _) in &items {
        s.wait_for(item, BacklogItemStatus::Done, false).await;
    }
    let changes = s
        .status_changes(|c| items.iter().all(|(item, _)| c.contains_key(item)))
        .await;
    for (item, _) in &items {
        assert_eq!(
            changes[item].len(),
            1,
            "item {item} transitioned {} times",
            changes[item].len()
        );
    }
    s.system.stop().await;
}

async fn manual_mode_flags_and_waits_for_a_person(engine: Engine) {
    let s = Sprinting::start(engine, StatusTransitionMode::Manual).await;
    let (item, tasks) = s.committed_item(3, 2).await;
    burn_down(&s, &item, &tasks, 2, false).await;
    let flagged = s.wait_for(&item, BacklogItemStatus::Committed, true).await;
    let done = s
        .items()
        .mark_backlog_item_done(MarkBacklogItemDoneRequest {
            id: item.clone(),
            expected_version: Some(flagged.version),
        })
        .await
        .unwrap()
        .into_inner()
        .backlog_item
        .unwrap();
    assert_eq!(
        (done.status, done.awaiting_acceptance),
        (BacklogItemStatus::Done as i32, false)
    );
    s.system.stop().await;
}

async fn removing_and_discovering_work_moves_status(engine: Engine) {
    let s = Sprinting::start(engine, StatusTransitionMode::Automatic).await;
    let (item, tasks) = s.committed_item(2, 3).await;
    let mut client = s.tasks();
    client
        .estimate_task_hours_remaining(estimate(&tasks[0], 0))
        .await
        .unwrap();
    // Removing the last task with hours left finishes the item.
    client
        .remove_task(RemoveTaskRequest {
            id: tasks[1].clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    s.wait_for(&item, BacklogItemStatus::Done, false).await;
    // Discovered work on a DONE item brings it back.
    let request = DefineTaskRequest {
        request_id: rid(),
        backlog_item_id: item.clone(),
        name: "found more".into(),
        hours_remaining: 4,
        ..Default::default()
    };
    client.define_task(request).await.unwrap();
    s.wait_for(&item, BacklogItemStatus::Committed, false).await;
    s.system.stop().await;
}

/// The coordinator's status as soon as `ready` holds for it, or after 20 s the last one
/// seen, for the caller's assertions to describe.
pub async fn coordinator_status_once(
    operator: &mut CoordinatorServiceClient<PeerChannel>,
    ready: impl Fn(&GetCoordinatorStatusResponse) -> bool,
) -> GetCoordinatorStatusResponse {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = operator
            .get_coordinator_status(GetCoordinatorStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        if ready(&status) || tokio::time::Instant::now() >= deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_poisoned_item_parks_alone_while_every_other_item_flows(engine: Engine) {
    let s = Sprinting::start(engine, StatusTransitionMode::Automatic).await;
    a_poisoned_item_parks_alone(&s, s.system.address(ServiceName::Coordinator)).await;
    s.system.stop().await;
}

/// Writes a task event about `item` of `tenant` (an item the backlog-item service never
/// heard of) straight into the task service's outbox, with totals for it: reconciling it
/// fails permanently (NOT_FOUND). Returns the event's id.
pub async fn poison(s: &Sprinting, tenant: &str, item: &str, revision: i64) -> String {
    let db = s.system.database(ServiceName::Task).await;
    sqlx::query(
        "INSERT INTO item_totals (backlog_item_id, tenant_id, hours_remaining, task_count, revision) \
         VALUES ($1, $2, 0, 1, $3) ON CONFLICT (backlog_item_id) DO UPDATE SET revision = excluded.revision",
    )
    .bind(item)
    .bind(tenant)
    .bind(revision)
    .execute(&db)
    .await
    .unwrap();
    let event = agilepm_proto::task::v1::TaskRemoved {
        task_id: rid(),
        tenant_id: tenant.into(),
        backlog_item_id: item.into(),
        totals: None,
    };
    let event_id = Uuid::now_v7().to_string();
    sqlx::query(
        "INSERT INTO outbox (event_id, event_type, aggregate_type, aggregate_id, tenant_id, occur_time_us, payload) \
         VALUES ($1, 'agilepm.task.v1.TaskRemoved', 'Task', $2, $3, 0, $4)",
    )
    .bind(&event_id)
    .bind(&event.task_id)
    .bind(tenant)
    .bind(prost::Message::encode_to_vec(&event))
    .execute(&db)
    .await
    .unwrap();
    db.close().await;
    event_id
}

/// Waits until the coordinator reports `item` parked with `events` events.
async fn parked(
    operator: &mut CoordinatorServiceClient<PeerChannel>,
    item: &str,
    events: i64,
) -> ParkedItem {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let listed = operator
            .list_parked_items(ListParkedItemsRequest::default())
            .await
            .unwrap()
            .into_inner();
        if let Some(parked) = listed
            .parked_items
            .into_iter()
            .find(|p| p.backlog_item_id == item && p.events == events)
        {
            return parked;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "item {item} was never parked with {events} events"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The scenario of issue 36 §2, against the coordinator at `coordinator` (in process on
/// the gRPC feed, or a replica on JetStream): a poisoned item of tenant
/// globex is parked, its later events wait behind it, and meanwhile acme's sprint and
/// globex's other items finish on time; the coordinator stays ready and says why; an
/// operator's retry fails while the item is still missing and succeeds once there is
/// nothing left to apply; a skip releases another.
pub async fn a_poisoned_item_parks_alone(s: &Sprinting, coordinator: std::net::SocketAddr) {
    let mut operator = CoordinatorServiceClient::new(agilepm_testkit::channel(
        coordinator,
        &agilepm_testkit::operator_token(),
    ));
    let ghost = Uuid::now_v7().to_string();
    let first = poison(s, "globex", &ghost, 1).await;
    let parked_item = parked(&mut operator, &ghost, 1).await;
    assert_eq!(parked_item.tenant_id, "globex");
    assert!(parked_item.error.contains("NotFound"), "{parked_item:?}");
    let listed = operator
        .list_poison_events(ListPoisonEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .poison_events;
    assert_eq!(
        listed
            .iter()
            .map(|p| p.event_id.as_str())
            .collect::<Vec<_>>(),
        vec![first.as_str()]
    );
    // A later event of the parked item waits behind it.
    poison(s, "globex", &ghost, 2).await;
    parked(&mut operator, &ghost, 2).await;

    // Meanwhile acme's sprint finishes on time, every item exactly once.
    let started = tokio::time::Instant::now();
    let mut items = Vec::new();
    for _ in 0..3 {
        let (item, tasks) = s.committed_item(2, 2).await;
        burn_down(s, &item, &tasks, 2, true).await;
        items.push(item);
    }
    for item in &items {
        s.wait_for(item, BacklogItemStatus::Done, false).await;
    }
    let took = started.elapsed();
    let changes = s
        .status_changes(|c| items.iter().all(|item| c.contains_key(item)))
        .await;
    for item in &items {
        assert_eq!(changes[item].len(), 1, "{:?}", changes[item]);
    }
    let status = coordinator_status_once(&mut operator, |s| s.lag_events == 0).await;
    assert!(
        status.healthy,
        "a parked item stops nothing else: {status:?}"
    );
    assert_eq!(
        (status.parked_items, status.poison_events),
        (1, 2),
        "{status:?}"
    );
    assert!(
        status.readiness_reason.contains("1 backlog items parked"),
        "{status:?}"
    );
    println!("with an item parked, 3 items of another tenant finished in {took:?}");

    // A tenant may not act on parked items; an operator's retry fails while the item is
    // still missing (it stays parked, with the failure), and succeeds once the task
    // service has nothing left to apply for it (its totals gone).
    let request = RetryParkedItemRequest {
        tenant_id: "globex".into(),
        backlog_item_id: ghost.clone(),
    };
    let mut tenant = CoordinatorServiceClient::new(agilepm_testkit::channel(
        coordinator,
        &agilepm_testkit::person_token(
            "globex-owner",
            "globex",
            &agilepm_platform::wire::auth::Role::TENANT_ROLES,
        ),
    ));
    let refused = tenant.retry_parked_item(request.clone()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let failed = operator
        .retry_parked_item(request.clone())
        .await
        .unwrap_err();
    assert_eq!(failed.code(), tonic::Code::FailedPrecondition, "{failed:?}");
    assert!(failed.message().contains("NotFound"), "{failed:?}");
    parked(&mut operator, &ghost, 2).await;
    let db = s.system.database(ServiceName::Task).await;
    sqlx::query("DELETE FROM item_totals WHERE backlog_item_id = $1")
        .bind(&ghost)
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
    let released = operator
        .retry_parked_item(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(released.released_events, 2);
    assert_eq!(
        operator
            .retry_parked_item(request)
            .await
            .unwrap_err()
            .code(),
        tonic::Code::NotFound,
        "released"
    );

    // Another poisoned item, skipped: what waited is dropped, nothing stays parked.
    let other = Uuid::now_v7().to_string();
    poison(s, "globex", &other, 1).await;
    parked(&mut operator, &other, 1).await;
    let skipped = operator
        .skip_parked_item(SkipParkedItemRequest {
            tenant_id: "globex".into(),
            backlog_item_id: other,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(skipped.skipped_events, 1);
    // And one skipped by the older call, naming its event: the item goes with it.
    let third = Uuid::now_v7().to_string();
    let event = poison(s, "globex", &third, 1).await;
    parked(&mut operator, &third, 1).await;
    let skipped = operator
        .skip_poison_event(SkipPoisonEventRequest { event_id: event })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(skipped.poison_event.unwrap().backlog_item_id, third);
    let status = coordinator_status_once(&mut operator, |s| s.parked_items == 0).await;
    assert_eq!(
        (status.parked_items, status.poison_events),
        (0, 0),
        "{status:?}"
    );
    assert_eq!(status.readiness_reason, "ready");
    // Bad input is named.
    let bad = operator
        .skip_parked_item(SkipParkedItemRequest {
            tenant_id: "no tenant".into(),
            backlog_item_id: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("tenant_id"), "{bad:?}");
}

/// Read-your-write, deterministically: 100 estimates, each followed at once by a read
/// with the token it answered, alternating GetBacklogItem and ListBacklogItems. No read
/// may show the item before the coordinator applied that estimate; the last (0 hours)
/// must show it DONE. A token the coordinator cannot reach in time is DEADLINE_EXCEEDED
/// naming the revisions; a malformed one INVALID_ARGUMENT.
async fn a_read_with_a_consistency_token_is_never_stale(engine: Engine) {
    const PAIRS: i32 = 100;
    let s = Sprinting::start(engine, StatusTransitionMode::Automatic).await;
    let (item, tasks) = s.committed_item(1, PAIRS).await;
    let mut task_client = s.tasks();
    let mut items = s.items();
    for pair in 0..PAIRS {
        let hours = PAIRS - 1 - pair;
        let estimated = task_client
            .estimate_task_hours_remaining(estimate(&tasks[0], hours))
            .await
            .unwrap()
            .into_inner();
        let revision = estimated.totals.unwrap().revision;
        let token = estimated.consistency_token;
        let read = if pair % 2 == 0 {
            items
                .get_backlog_item(GetBacklogItemRequest {
                    id: item.clone(),
                    consistency_token: token,
                })
                .await
                .unwrap()
                .into_inner()
                .backlog_item
                .unwrap()
        } else {
            items
                .list_backlog_items(ListBacklogItemsRequest {
                    product_id: s.product.id.clone(),
                    consistency_token: token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .backlog_items
                .into_iter()
                .find(|i| i.id == item)
                .unwrap()
        };
        assert!(
            read.reconciled_task_revision >= revision,
            "pair {pair}: read revision {} before the estimate's {revision}",
            read.reconciled_task_revision
        );
        if hours == 0 {
            assert_eq!(
                read.status,
                BacklogItemStatus::Done as i32,
                "the last read is DONE"
            );
        }
    }
    // A revision nobody will ever apply: refused when the caller's deadline comes.
    let unreachable = format!("v1.{item}.{}", 1_000_000);
    let mut late = tonic::Request::new(GetBacklogItemRequest {
        id: item.clone(),
        consistency_token: unreachable,
    });
    late.set_timeout(Duration::from_millis(300));
    let refused = items.get_backlog_item(late).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::DeadlineExceeded, "{refused:?}");
    assert!(refused.message().contains("not yet 1000000"), "{refused:?}");
    for (token, id) in [
        ("v1.nonsense.3".to_owned(), item.clone()),
        (format!("v1.{}.1", Uuid::new_v4()), item.clone()),
    ] {
        let refused = items
            .get_backlog_item(GetBacklogItemRequest {
                id,
                consistency_token: token,
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    }
    s.system.stop().await;
}
