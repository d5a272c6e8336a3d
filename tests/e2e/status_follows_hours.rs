//! Status follows hours from every path, not only from task events (issue 36 §1; DESIGN
//! §8): an item whose tasks were finished before it was committed becomes DONE when it is
//! committed; a switch from MANUAL to AUTOMATIC releases the items awaiting acceptance; a
//! person accepts only what has no hours left. Then the bar itself, as a property over
//! random sequences of commits, uncommits, mode switches, estimates, task definitions and
//! removals and acceptances, run against the real services: afterwards no item's status
//! contradicts its hours and its product's mode, and each item's status changes on the
//! feed form one unbroken chain (nothing transitioned twice).

use std::collections::HashMap;
use std::sync::Arc;

use agilepm_platform::wire::config::ServiceName;
use agilepm_proto::backlog::v1::backlog_item_service_client::BacklogItemServiceClient;
use agilepm_proto::backlog::v1::{
    BacklogItem, BacklogItemStatus, BacklogItemStatusChanged, GetBacklogItemRequest,
    MarkBacklogItemDoneRequest, PlanBacklogItemRequest, StatusChangeCause,
};
use agilepm_proto::common::v1::StatusTransitionMode;
use agilepm_proto::events::v1::event_feed_service_client::EventFeedServiceClient;
use agilepm_proto::events::v1::{GetFeedHeadRequest, SubscribeRequest, subscribe_response};
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
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tonic::Code;
use uuid::Uuid;

use crate::coordinator::Sprinting;

engine_tests!(
    an_item_finished_before_its_commitment_becomes_done_when_committed,
    a_switch_to_automatic_releases_what_awaits_acceptance,
    a_person_accepts_only_what_has_no_hours_left,
    no_random_sequence_leaves_a_status_that_contradicts_hours_and_mode,
);

fn rid() -> String {
    Uuid::new_v4().to_string()
}

impl Sprinting {
    pub(crate) fn sprints(
        &self,
    ) -> SprintServiceClient<agilepm_platform::wire::client::PeerChannel> {
        SprintServiceClient::new(self.system.channel(ServiceName::Planning, "acme"))
    }

    async fn commit(&self, item: &str) -> BacklogItem {
        self.sprints()
            .commit_backlog_item_to_sprint(CommitBacklogItemToSprintRequest {
                sprint_id: self.sprint.id.clone(),
                backlog_item_id: item.into(),
                expected_version: None,
            })
            .await
            .unwrap()
            .into_inner()
            .backlog_item
            .unwrap()
    }

    async fn uncommit(&self, item: &str) -> BacklogItem {
        self.sprints()
            .uncommit_backlog_item_from_sprint(UncommitBacklogItemFromSprintRequest {
                backlog_item_id: item.into(),
                expected_version: None,
            })
            .await
            .unwrap()
            .into_inner()
            .backlog_item
            .unwrap()
    }

    /// Defines `count` tasks of `hours` on `item` and estimates each to `to`; returns the
    /// last change's consistency token.
    async fn tasks_estimated(&self, item: &str, count: usize, hours: i32, to: i32) -> String {
        let mut token = String::new();
        for n in 0..count {
            let task = self
                .tasks()
                .define_task(DefineTaskRequest {
                    request_id: rid(),
                    backlog_item_id: item.into(),
                    name: format!("task {n}"),
                    hours_remaining: hours,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            token = task.consistency_token;
            if to != hours {
                token = self
                    .tasks()
                    .estimate_task_hours_remaining(EstimateTaskHoursRemainingRequest {
                        id: task.task.unwrap().id,
                        hours_remaining: to,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .consistency_token;
            }
        }
        token
    }

    /// The item once the coordinator applied the change `token` names.
    async fn item_after(&self, item: &str, token: &str) -> BacklogItem {
        self.items()
            .get_backlog_item(GetBacklogItemRequest {
                id: item.into(),
                consistency_token: token.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .backlog_item
            .unwrap()
    }

    async fn switch_mode(&self, mode: StatusTransitionMode) {
        switch_mode(&self.system, &self.product.id, mode, "acme").await;
    }
}

async fn switch_mode(system: &TestSystem, product: &str, mode: StatusTransitionMode, tenant: &str) {
    ProductServiceClient::new(system.channel(ServiceName::Planning, tenant))
        .update_product(UpdateProductRequest {
            product: Some(Product {
                id: product.into(),
                status_transition_mode: mode as i32,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["status_transition_mode".into()],
            }),
            expected_version: None,
        })
        .await
        .unwrap();
}

fn status(item: &BacklogItem) -> (BacklogItemStatus, bool) {
    (item.status(), item.awaiting_acceptance)
}

/// Every status change of `tenant`'s items on the backlog-item feed, per item in feed
/// order, read to the head as it is when this is called.
async fn status_changes(
    system: &TestSystem,
    tenant: &str,
) -> HashMap<String, Vec<BacklogItemStatusChanged>> {
    let mut feed = EventFeedServiceClient::new(system.channel(ServiceName::BacklogItem, tenant));
    let head = feed
        .get_feed_head(GetFeedHeadRequest {})
        .await
        .unwrap()
        .into_inner()
        .head_position;
    let request = SubscribeRequest {
        event_types: vec!["agilepm.backlog.v1.BacklogItemStatusChanged".into()],
        heartbeat_interval_ms: 100,
        ..Default::default()
    };
    let mut stream = feed.subscribe(request).await.unwrap().into_inner();
    let mut changes: HashMap<String, Vec<BacklogItemStatusChanged>> = HashMap::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let message = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("the feed reaches its head")
            .unwrap()
            .unwrap();
        match message.kind {
            Some(subscribe_response::Kind::Event(event)) => {
                let change: BacklogItemStatusChanged =
                    prost::Message::decode(event.payload.unwrap().value.as_slice()).unwrap();
                changes
                    .entry(change.backlog_item_id.clone())
                    .or_default()
                    .push(change);
            }
            Some(subscribe_response::Kind::Heartbeat(beat))
                if position(&beat.scanned_position) >= position(&head) =>
            {
                return changes;
            }
            _ => {}
        }
    }
}

/// A feed position's place in its feed's order (`<feed>.<txid>.<seq>`).
fn position(encoded: &str) -> (i64, i64) {
    let mut parts = encoded.rsplit('.');
    let seq = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let txid = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (txid, seq)
}

/// The transitions into DONE among `changes`, with their causes.
fn done_causes(changes: &[BacklogItemStatusChanged]) -> Vec<StatusChangeCause> {
    changes
        .iter()
        .filter(|c| c.new_status == BacklogItemStatus::Done as i32)
        .map(|c| c.cause())
        .collect()
}

async fn an_item_finished_before_its_commitment_becomes_done_when_committed(engine: Engine) {
    let s = Sprinting::start(engine, StatusTransitionMode::Automatic).await;

    // Tasks defined and finished while the item was only scheduled.
    let early = s.scheduled_item().await;
    let token = s.tasks_estimated(&early, 3, 4, 0).await;
    let applied = s.item_after(&early, &token).await;
    assert_eq!(
        (
            applied.status(),
            applied.task_hours_remaining,
            applied.task_count
        ),
        (BacklogItemStatus::Scheduled, 0, 3),
        "hours reconciled while scheduled change nothing but are remembered"
    );
    let committed = s.commit(&early).await;
    assert_eq!(status(&committed), (BacklogItemStatus::Done, false));

    // Committed with hours left, uncommitted, finished meanwhile, committed again.
    let again = s.scheduled_item().await;
    s.tasks_estimated(&again, 2, 5, 5).await;
    assert_eq!(
        s.commit(&again).await.status(),
        BacklogItemStatus::Committed
    );
    assert_eq!(
        s.uncommit(&again).await.status(),
        BacklogItemStatus::Scheduled
    );
    // Finish the two tasks while the item is scheduled.
    let mut token = String::new();
    for task in s.item_tasks(&again).await {
        token = s
            .tasks()
            .estimate_task_hours_remaining(EstimateTaskHoursRemainingRequest {
                id: task,
                hours_remaining: 0,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .consistency_token;
    }
    assert_eq!(
        status(&s.item_after(&again, &token).await),
        (BacklogItemStatus::Scheduled, false)
    );
    assert_eq!(
        status(&s.commit(&again).await),
        (BacklogItemStatus::Done, false)
    );

    // Exactly once each, caused by the task hours; the commitment came first.
    let changes = status_changes(&s.system, "acme").await;
    for item in [&early, &again] {
        assert_eq!(
            done_causes(&changes[item]),
            vec![StatusChangeCause::TaskHours],
            "{:?}",
            changes[item]
        );
        let last = changes[item].last().unwrap();
        assert_eq!(
            (
                last.old_status(),
                last.new_status(),
                last.task_hours_remaining
            ),
            (BacklogItemStatus::Committed, BacklogItemStatus::Done, 0)
        );
    }
    s.system.stop().await;
}

impl Sprinting {
    /// The ids of `item`'s tasks.
    async fn item_tasks(&self, item: &str) -> Vec<String> {
        self.tasks()
            .list_tasks(agilepm_proto::task::v1::ListTasksRequest {
                backlog_item_id: item.into(),
                page_size: 100,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .tasks
            .into_iter()
            .map(|t| t.id)
            .collect()
    }
}

async fn a_switch_to_automatic_releases_what_awaits_acceptance(engine: Engine) {
    let s = Sprinting::start(engine, StatusTransitionMode::Manual).await;
    // Finished before commitment: awaits acceptance on commit.
    let early = s.scheduled_item().await;
    let token = s.tasks_estimated(&early, 2, 3, 0).await;
    s.item_after(&early, &token).await;
    assert_eq!(
        status(&s.commit(&early).await),
        (BacklogItemStatus::Committed, true)
    );
    // Finished after commitment: flagged by the coordinator.
    let late = s.scheduled_item().await;
    s.commit(&late).await;
    let token = s.tasks_estimated(&late, 2, 3, 0).await;
    assert_eq!(
        status(&s.item_after(&late, &token).await),
        (BacklogItemStatus::Committed, true)
    );
    // Hours left: a switch does not touch it.
    let busy = s.scheduled_item().await;
    s.commit(&busy).await;
    let token = s.tasks_estimated(&busy, 1, 3, 2).await;
    s.item_after(&busy, &token).await;

    s.switch_mode(StatusTransitionMode::Automatic).await;
    // Released in the switch's own transaction: visible as soon as the switch returned.
    for item in [&early, &late] {
        assert_eq!(
            status(&s.item(item).await),
            (BacklogItemStatus::Done, false)
        );
    }
    assert_eq!(
        status(&s.item(&busy).await),
        (BacklogItemStatus::Committed, false)
    );
    // Back to MANUAL: nothing already DONE moves; switching again releases nothing twice.
    s.switch_mode(StatusTransitionMode::Manual).await;
    s.switch_mode(StatusTransitionMode::Automatic).await;
    for item in [&early, &late] {
        assert_eq!(s.item(item).await.status(), BacklogItemStatus::Done);
    }
    let changes = status_changes(&s.system, "acme").await;
    for item in [&early, &late] {
        assert_eq!(
            done_causes(&changes[item]),
            vec![StatusChangeCause::TransitionMode],
            "{:?}",
            changes[item]
        );
    }
    assert!(done_causes(changes.get(&busy).map_or(&[][..], |c| c)).is_empty());
    s.system.stop().await;
}

async fn a_person_accepts_only_what_has_no_hours_left(engine: Engine) {
    let mut s = Sprinting::start(engine, StatusTransitionMode::Manual).await;
    for mode in [
        StatusTransitionMode::Manual,
        StatusTransitionMode::Automatic,
    ] {
        s.replan(mode, day(-5), day(6)).await;
        let item = s.scheduled_item().await;
        s.commit(&item).await;
        let token = s.tasks_estimated(&item, 2, 3, 3).await;
        let before = s.item_after(&item, &token).await;
        let refused = s
            .items()
            .mark_backlog_item_done(MarkBacklogItemDoneRequest {
                id: item.clone(),
                expected_version: None,
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{mode:?}");
        assert!(
            refused.message().contains("6 hours remain"),
            "{mode:?}: {refused:?}"
        );
        assert_eq!(
            s.item(&item).await.version,
            before.version,
            "nothing changed"
        );
    }
    // AUTOMATIC: an item without tasks is accepted by a person (nothing else finishes it).
    let bare = s.scheduled_item().await;
    s.commit(&bare).await;
    let accepted = s
        .items()
        .mark_backlog_item_done(MarkBacklogItemDoneRequest {
            id: bare.clone(),
            expected_version: None,
        })
        .await
        .unwrap()
        .into_inner()
        .backlog_item
        .unwrap();
    assert_eq!(status(&accepted), (BacklogItemStatus::Done, false));

    // MANUAL: accepted once awaiting; discovered work reopens it (the documented rule).
    s.replan(StatusTransitionMode::Manual, day(-5), day(6))
        .await;
    let item = s.scheduled_item().await;
    s.commit(&item).await;
    let token = s.tasks_estimated(&item, 1, 3, 0).await;
    let flagged = s.item_after(&item, &token).await;
    assert_eq!(status(&flagged), (BacklogItemStatus::Committed, true));
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
    assert_eq!(status(&done), (BacklogItemStatus::Done, false));
    let task = s.item_tasks(&item).await.remove(0);
    let token = s
        .tasks()
        .estimate_task_hours_remaining(EstimateTaskHoursRemainingRequest {
            id: task,
            hours_remaining: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .consistency_token;
    assert_eq!(
        status(&s.item_after(&item, &token).await),
        (BacklogItemStatus::Committed, false)
    );
    s.system.stop().await;
}

/// One step of a random sequence.
#[derive(Debug, Clone, Copy)]
enum Step {
    Define(i32),
    Estimate(usize, i32),
    Remove(usize),
    Commit,
    Uncommit,
    Switch(StatusTransitionMode),
    Accept,
}

fn random_step(rng: &mut StdRng) -> Step {
    match rng.random_range(0..10) {
        0 | 1 => Step::Define(rng.random_range(0..3)),
        2..=4 => Step::Estimate(rng.random_range(0..4), rng.random_range(0..3)),
        5 => Step::Remove(rng.random_range(0..4)),
        6 => Step::Commit,
        7 => Step::Uncommit,
        8 => Step::Switch(if rng.random_bool(0.5) {
            StatusTransitionMode::Manual
        } else {
            StatusTransitionMode::Automatic
        }),
        _ => Step::Accept,
    }
}

/// What a sequence left: the item, and its tasks' hours and product's mode as the test
/// knows them from the answers it got.
struct Outcome {
    steps: Vec<Step>,
    item: BacklogItem,
    hours: i64,
    count: i64,
    mode: StatusTransitionMode,
}

/// Runs `steps` on a fresh product and item of `tenant`, refusals allowed (a commit of a
/// committed item, an acceptance with hours left), then reads the item once every task
/// change reached it.
async fn run_sequence(system: Arc<TestSystem>, tenant: String, steps: Vec<Step>) -> Outcome {
    let planning = system.channel(ServiceName::Planning, &tenant);
    let mode = if steps.len().is_multiple_of(2) {
        StatusTransitionMode::Automatic
    } else {
        StatusTransitionMode::Manual
    };
    let s = Sprinting::prepare_as_shared(&system, mode, &tenant).await;
    let mut items =
        BacklogItemServiceClient::new(system.channel(ServiceName::BacklogItem, &tenant));
    let mut tasks = TaskServiceClient::new(system.channel(ServiceName::Task, &tenant));
    let mut sprints = SprintServiceClient::new(planning.clone());
    let item = items
        .plan_backlog_item(PlanBacklogItemRequest {
            request_id: rid(),
            product_id: s.0.id.clone(),
            summary: "random".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .backlog_item
        .unwrap()
        .id;
    ReleaseServiceClient::new(planning)
        .schedule_backlog_item_for_release(ScheduleBacklogItemForReleaseRequest {
            release_id: s.1.id.clone(),
            backlog_item_id: item.clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    let mut task_hours: Vec<(String, i64)> = Vec::new();
    let mut token = String::new();
    let mut mode = mode;
    for step in &steps {
        match *step {
            Step::Define(hours) => {
                let r = tasks
                    .define_task(DefineTaskRequest {
                        request_id: rid(),
                        backlog_item_id: item.clone(),
                        name: "t".into(),
                        hours_remaining: hours,
                        ..Default::default()
                    })
                    .await;
                // A DONE item takes discovered work; nothing else refuses here.
                let r = r.unwrap().into_inner();
                task_hours.push((r.task.unwrap().id, i64::from(hours)));
                token = r.consistency_token;
            }
            Step::Estimate(n, hours) if !task_hours.is_empty() => {
                let n = n % task_hours.len();
                let r = tasks
                    .estimate_task_hours_remaining(EstimateTaskHoursRemainingRequest {
                        id: task_hours[n].0.clone(),
                        hours_remaining: hours,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                task_hours[n].1 = i64::from(hours);
                if !r.consistency_token.is_empty() {
                    token = r.consistency_token;
                }
            }
            Step::Remove(n) if !task_hours.is_empty() => {
                let n = n % task_hours.len();
                let (id, _) = task_hours.remove(n);
                let r = tasks
                    .remove_task(RemoveTaskRequest {
                        id,
                        expected_version: None,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                token = r.consistency_token;
            }
            Step::Estimate(..) | Step::Remove(_) => {}
            Step::Commit => {
                let r = sprints
                    .commit_backlog_item_to_sprint(CommitBacklogItemToSprintRequest {
                        sprint_id: s.2.id.clone(),
                        backlog_item_id: item.clone(),
                        expected_version: None,
                    })
                    .await;
                if let Err(e) = r {
                    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
                }
            }
            Step::Uncommit => {
                let r = sprints
                    .uncommit_backlog_item_from_sprint(UncommitBacklogItemFromSprintRequest {
                        backlog_item_id: item.clone(),
                        expected_version: None,
                    })
                    .await;
                if let Err(e) = r {
                    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
                }
            }
            Step::Switch(to) => {
                switch_mode(&system, &s.0.id, to, &tenant).await;
                mode = to;
            }
            Step::Accept => {
                let r = items
                    .mark_backlog_item_done(MarkBacklogItemDoneRequest {
                        id: item.clone(),
                        expected_version: None,
                    })
                    .await;
                if let Err(e) = r {
                    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
                }
            }
        }
    }
    let item = items
        .get_backlog_item(GetBacklogItemRequest {
            id: item,
            consistency_token: token,
        })
        .await
        .unwrap()
        .into_inner()
        .backlog_item
        .unwrap();
    Outcome {
        steps,
        item,
        hours: task_hours.iter().map(|(_, h)| h).sum(),
        count: task_hours.len() as i64,
        mode,
    }
}

impl Sprinting {
    /// A product of `mode` with a release and a sprint, for `tenant`, on a shared system.
    async fn prepare_as_shared(
        system: &TestSystem,
        mode: StatusTransitionMode,
        tenant: &str,
    ) -> (Product, Release, Sprint) {
        crate::coordinator::plan(system, mode, tenant, day(-5), day(6)).await
    }
}

/// The contradiction, if any, between an item's status and its hours and mode.
fn contradiction(o: &Outcome) -> Option<String> {
    let finished = o.count > 0 && o.hours == 0;
    let manual = o.mode == StatusTransitionMode::Manual;
    let (status, awaiting) = status(&o.item);
    let wrong = match status {
        BacklogItemStatus::Done => o.hours > 0,
        BacklogItemStatus::Committed => (finished && !manual) || awaiting != (finished && manual),
        _ => awaiting,
    };
    let reported = (o.item.task_hours_remaining, o.item.task_count) != (o.hours, o.count);
    (wrong || reported).then(|| {
        format!(
            "{status:?} awaiting={awaiting} with {} hours in {} tasks (item reports {} in {}), {:?} mode, after {:?}",
            o.hours, o.count, o.item.task_hours_remaining, o.item.task_count, o.mode, o.steps
        )
    })
}

async fn no_random_sequence_leaves_a_status_that_contradicts_hours_and_mode(engine: Engine) {
    const SEQUENCES: usize = 240;
    const AT_ONCE: usize = 24;
    let seed: u64 = std::env::var("AGILEPM_PROPERTY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("random sequences from seed {seed} (AGILEPM_PROPERTY_SEED replays them)");
    let mut rng = StdRng::seed_from_u64(seed);
    let system = Arc::new(TestSystem::start(engine, &ServiceName::ALL).await);
    let sequences: Vec<Vec<Step>> = (0..SEQUENCES)
        .map(|_| {
            let len = rng.random_range(3..10);
            (0..len).map(|_| random_step(&mut rng)).collect()
        })
        .collect();
    let started = std::time::Instant::now();
    let outcomes: Vec<Outcome> = futures::stream::iter(sequences.into_iter().enumerate())
        .map(|(n, steps)| {
            let system = system.clone();
            // Sequences of one tenant share its feeds, totals and the coordinator's
            // batches; several tenants share the processes.
            tokio::spawn(run_sequence(system, format!("prop{}", n % 4), steps))
        })
        .buffer_unordered(AT_ONCE)
        .map(|joined| joined.unwrap())
        .collect()
        .await;
    println!(
        "{} sequences in {:.1} s",
        outcomes.len(),
        started.elapsed().as_secs_f64()
    );
    let contradictions: Vec<String> = outcomes.iter().filter_map(contradiction).collect();
    assert!(
        contradictions.is_empty(),
        "{} of {SEQUENCES} (seed {seed}):\n{}",
        contradictions.len(),
        contradictions.join("\n")
    );
    // Each item's status changes form one chain that ends where the item is: no
    // transition was applied twice, none was lost.
    for tenant in ["prop0", "prop1", "prop2", "prop3"] {
        let changes = status_changes(&system, tenant).await;
        for o in outcomes.iter().filter(|o| o.item.tenant_id == tenant) {
            let mut at = (BacklogItemStatus::Planned as i32, false);
            for change in changes.get(&o.item.id).map_or(&[][..], |c| c) {
                assert_eq!(
                    change.old_status, at.0,
                    "a broken chain (seed {seed}): {:?} after {:?}",
                    changes[&o.item.id], o.steps
                );
                assert_ne!(
                    (change.new_status, change.awaiting_acceptance),
                    at,
                    "a change that changed nothing"
                );
                at = (change.new_status, change.awaiting_acceptance);
            }
            assert_eq!(
                at,
                (o.item.status, o.item.awaiting_acceptance),
                "{:?}",
                o.steps
            );
        }
    }
    Arc::into_inner(system).unwrap().stop().await;
}
