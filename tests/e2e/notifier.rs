//! The notifier end to end: real services, a real HTTP receiver that verifies Standard
//! Webhooks signatures, and the notifier killed, misled and refused on purpose.
//!
//! What every test checks in the end is the yardstick: the distinct `webhook-id`s
//! a receiver accepted are exactly the events (or sprint verdicts) that should be told,
//! and an id arrives twice only where the receiver acknowledged too late.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use agilepm_platform::wire::auth::Role;
use agilepm_platform::wire::client::PeerChannel;
use agilepm_platform::wire::config::ServiceName;
use agilepm_proto::backlog::v1::{BacklogItemStatus, BacklogItemStatusChanged};
use agilepm_proto::common::v1::StatusTransitionMode;
use agilepm_proto::notifier::v1::notifier_service_client::NotifierServiceClient;
use agilepm_proto::notifier::v1::*;
use agilepm_proto::planning::v1::report_service_client::ReportServiceClient;
use agilepm_proto::planning::v1::sprint_service_client::SprintServiceClient;
use agilepm_proto::planning::v1::team_service_client::TeamServiceClient;
use agilepm_proto::planning::v1::{
    CompleteSprintRequest, GetSprintBurndownRequest, StartSprintRequest, TeamSettings,
    UpdateTeamSettingsRequest,
};
use agilepm_proto::task::v1::{
    ChangeTaskStatusRequest, EstimateTaskHoursRemainingRequest, TaskStatus,
};
use agilepm_testkit::metrics::Scrape;
use agilepm_testkit::webhook::{Answer, Behaviour, Received, Receiver, accepted_ids};
use agilepm_testkit::{Engine, TestDb, TestSystem, day, engine_tests};
use tokio::process::Child;
use tonic::Code;

use crate::coordinator::{Sprinting, burn_down, estimate, estimate_down, race_two_tasks_to_zero};
use crate::processes::{free_address, spawn_service, wait_serving};

engine_tests!(
    the_yardstick_and_the_race_are_told_once_each,
    a_flaky_receiver_gets_everything_twice_only_after_late_answers,
    a_killed_notifier_loses_nothing_and_invents_no_webhook_id,
    a_delivery_that_keeps_failing_is_dead_lettered_and_redelivered,
    a_hanging_or_redirecting_endpoint_holds_back_no_other,
    a_sprint_falling_behind_is_at_risk_once_and_one_on_track_is_not,
    a_sprint_is_judged_on_its_team_s_days_not_utc_s,
    subscription_writes_are_safe_to_retry_and_guarded_by_version,
    a_changed_subscription_gets_no_further_attempt_at_its_old_target,
    targets_that_resolve_to_private_addresses_are_refused,
);

#[tokio::test]
async fn subscriptions_are_validated_scoped_and_their_secrets_rotate() {
    subscriptions_are_validated_scoped_and_rotate(Engine::Sqlite).await;
}

/// The services the notifier follows, and the coordinator that makes items DONE.
const PEERS: [ServiceName; 4] = [
    ServiceName::BacklogItem,
    ServiceName::Task,
    ServiceName::Planning,
    ServiceName::Coordinator,
];

fn notifier(channel: PeerChannel) -> NotifierServiceClient<PeerChannel> {
    NotifierServiceClient::new(channel)
}

/// Subscribes `url` to `types`; returns the subscription and its secret.
async fn subscribe(
    client: &mut NotifierServiceClient<PeerChannel>,
    url: &str,
    types: &[NotificationType],
) -> (Subscription, String) {
    let created = client
        .create_subscription(CreateSubscriptionRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            target_url: url.into(),
            notification_types: types.iter().map(|t| *t as i32).collect(),
            description: "test receiver".into(),
            disabled: false,
        })
        .await
        .unwrap()
        .into_inner();
    (created.subscription.unwrap(), created.signing_secret)
}

/// A notifier process on `database_url` following `system`, with `env` on top.
fn spawn_notifier(
    system: &TestSystem,
    address: SocketAddr,
    database_url: &str,
    env_overrides: &[(&str, &str)],
) -> Child {
    // The receivers listen on loopback, which a keyed notifier refuses unless allowed;
    // `env` may narrow it again.
    let mut env: Vec<(&str, String)> =
        vec![("AGILEPM_NOTIFIER_ALLOWED_NETWORKS", "127.0.0.0/8".into())];
    env.extend(env_overrides.iter().map(|(k, v)| (*k, (*v).to_owned())));
    spawn_service(
        env!("CARGO_BIN_EXE_notifier-under-test"),
        address,
        database_url,
        &[
            (
                "AGILEPM_BACKLOG_ITEM_ENDPOINT",
                system.address(ServiceName::BacklogItem),
            ),
            ("AGILEPM_TASK_ENDPOINT", system.address(ServiceName::Task)),
            (
                "AGILEPM_PLANNING_ENDPOINT",
                system.address(ServiceName::Planning),
            ),
        ],
        &env,
    )
}

/// A product with a sprint on the services of `peers`, and a notifier process on a
/// fresh database following them with `env`, serving.
struct WithNotifier {
    s: Sprinting,
    database: TestDb,
    address: SocketAddr,
    process: Child,
}

impl WithNotifier {
    async fn start(engine: Engine, peers: &[ServiceName], env: &[(&str, &str)]) -> WithNotifier {
        let system = TestSystem::start(engine, peers).await;
        let s = Sprinting::prepare(system, StatusTransitionMode::Automatic).await;
        let database = TestDb::create(engine).await;
        let address = free_address();
        let process = spawn_notifier(&s.system, address, database.url(), env);
        wait_serving(address, "the notifier").await;
        WithNotifier {
            s,
            database,
            address,
            process,
        }
    }
}

/// A product owner of acme at the notifier process on `address`.
fn notifier_at(address: SocketAddr) -> NotifierServiceClient<PeerChannel> {
    notifier(agilepm_testkit::channel(
        address,
        &agilepm_testkit::person_token("acme-po", "acme", &Role::TENANT_ROLES),
    ))
}

/// Starts the sprint `s` points at.
async fn start_sprint(s: &Sprinting) {
    SprintServiceClient::new(s.system.channel(ServiceName::Planning, "acme"))
        .start_sprint(StartSprintRequest {
            id: s.sprint.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();
}

/// The ids of the backlog-item events that tell an item became DONE, read to the head.
async fn done_event_ids(s: &Sprinting) -> BTreeSet<String> {
    agilepm_testkit::feed_events(s.system.channel(ServiceName::BacklogItem, "acme"), 1)
        .await
        .into_iter()
        .filter(|event| event.event_type == "agilepm.backlog.v1.BacklogItemStatusChanged")
        .filter(|event| {
            let change: BacklogItemStatusChanged =
                prost::Message::decode(event.payload.as_ref().unwrap().value.as_slice()).unwrap();
            change.new_status == BacklogItemStatus::Done as i32
                && change.old_status != BacklogItemStatus::Done as i32
        })
        .map(|event| event.event_id)
        .collect()
}

/// The ids of the planning events of type `event_type`.
async fn planning_event_ids(s: &Sprinting, event_type: &str) -> BTreeSet<String> {
    agilepm_testkit::feed_events(s.system.channel(ServiceName::Planning, "acme"), 1)
        .await
        .into_iter()
        .filter(|event| event.event_type == event_type)
        .map(|event| event.event_id)
        .collect()
}

/// How often each webhook id was answered 2xx.
fn accepted_counts(log: &[Received]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for received in log {
        if matches!(received.answer, Answer::Accepted | Answer::Late) {
            *counts.entry(received.webhook_id.clone()).or_default() += 1;
        }
    }
    counts
}

/// The deliveries listed with `request`'s filters (the first page, up to 1000).
async fn listed(
    client: &NotifierServiceClient<PeerChannel>,
    request: ListDeliveriesRequest,
) -> Vec<Delivery> {
    client
        .clone()
        .list_deliveries(ListDeliveriesRequest {
            page_size: 1000,
            ..request
        })
        .await
        .unwrap()
        .into_inner()
        .deliveries
}

/// A subscription's deliveries in `state`.
fn of(subscription: &Subscription, state: DeliveryState) -> ListDeliveriesRequest {
    ListDeliveriesRequest {
        subscription_id: subscription.subscription_id.clone(),
        state: state as i32,
        ..Default::default()
    }
}

/// Waits (at most 60 s) until the deliveries listed with `request` satisfy `done`.
async fn wait_for_deliveries(
    client: &NotifierServiceClient<PeerChannel>,
    request: ListDeliveriesRequest,
    what: &str,
    done: impl Fn(&[Delivery]) -> bool,
) -> Vec<Delivery> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let deliveries = listed(client, request.clone()).await;
        if done(&deliveries) {
            return deliveries;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within 60 s: {deliveries:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until nothing is pending at the notifier and returns every delivery.
async fn settled_deliveries(client: &mut NotifierServiceClient<PeerChannel>) -> Vec<Delivery> {
    let pending = ListDeliveriesRequest {
        state: DeliveryState::Pending as i32,
        ..Default::default()
    };
    wait_for_deliveries(client, pending, "nothing pending", <[Delivery]>::is_empty).await;
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_deliveries(ListDeliveriesRequest {
                page_size: 1000,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        all.extend(page.deliveries);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

async fn the_yardstick_and_the_race_are_told_once_each(engine: Engine) {
    let s = Sprinting::start(engine, StatusTransitionMode::Automatic).await;
    let receiver = Receiver::start(Behaviour::default()).await;
    let mut client = notifier(s.system.channel(ServiceName::Notifier, "acme"));
    let (_, secret) = subscribe(
        &mut client,
        &receiver.url(),
        &[
            NotificationType::BacklogItemDone,
            NotificationType::BacklogItemRegressed,
            NotificationType::SprintStarted,
            NotificationType::SprintCompleted,
            NotificationType::TaskImpeded,
        ],
    )
    .await;
    receiver.trust(&[secret]);
    start_sprint(&s).await;

    // The yardstick: one item, 6 tasks of 6 hours burned down in a shuffled order.
    let (yardstick, tasks) = s.committed_item(6, 6).await;
    burn_down(&s, &yardstick, &tasks, 6, false).await;
    // The race: 50 items whose two last tasks are finished at the same moment.
    let mut race = Vec::new();
    for _ in 0..50 {
        race.push(race_two_tasks_to_zero(&s).await);
    }
    // One task impeded.
    let (_, impeded) = s.committed_item(1, 3).await;
    s.tasks()
        .change_task_status(ChangeTaskStatusRequest {
            id: impeded[0].clone(),
            status: TaskStatus::Impeded as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    s.wait_for(&yardstick, BacklogItemStatus::Done, false).await;
    for (item, _) in &race {
        s.wait_for(item, BacklogItemStatus::Done, false).await;
    }
    SprintServiceClient::new(s.system.channel(ServiceName::Planning, "acme"))
        .complete_sprint(CompleteSprintRequest {
            id: s.sprint.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();

    let done = done_event_ids(&s).await;
    assert_eq!(done.len(), 51, "one DONE per item");
    let started = planning_event_ids(&s, "agilepm.planning.v1.SprintStarted").await;
    let completed = planning_event_ids(&s, "agilepm.planning.v1.SprintCompleted").await;
    let expected = done.len() + started.len() + completed.len() + 1;
    receiver
        .wait_until("every notification", Duration::from_secs(60), |log| {
            accepted_ids(log).len() >= expected
        })
        .await;
    let deliveries = settled_deliveries(&mut client).await;
    let counts = accepted_counts(&receiver.received());
    assert_eq!(counts.len(), expected, "distinct webhook ids");
    assert!(
        counts.values().all(|n| *n == 1),
        "a receiver that answers at once gets each id once: {counts:?}"
    );
    assert!(
        receiver
            .received()
            .iter()
            .all(|r| r.answer == Answer::Accepted),
        "every signature verified"
    );
    for id in done.iter().chain(&started).chain(&completed) {
        assert!(counts.contains_key(id), "event {id} was told");
    }
    let types: BTreeMap<String, usize> =
        receiver
            .received()
            .iter()
            .fold(BTreeMap::new(), |mut m, r| {
                *m.entry(r.body["type"].as_str().unwrap_or("?").to_owned())
                    .or_default() += 1;
                m
            });
    assert_eq!(
        types,
        BTreeMap::from([
            ("backlog_item.done".to_owned(), 51),
            ("sprint.completed".to_owned(), 1),
            ("sprint.started".to_owned(), 1),
            ("task.impeded".to_owned(), 1),
        ])
    );
    assert_eq!(deliveries.len(), expected);
    assert!(
        deliveries
            .iter()
            .all(|d| d.state == DeliveryState::Delivered as i32 && d.attempts == 1)
    );
    s.system.stop().await;
}

/// The DONE items of `items` estimated down by `workers` clients: waits for all of them.
async fn run_items_down(
    s: &Sprinting,
    items: &[(String, Vec<String>)],
    workers: usize,
    hours: i32,
) {
    let sent = Arc::new(AtomicUsize::new(0));
    for worker in estimate_down(s, items, workers, hours, sent) {
        worker.await.unwrap();
    }
    for (item, _) in items {
        s.wait_for(item, BacklogItemStatus::Done, false).await;
    }
}

async fn a_flaky_receiver_gets_everything_twice_only_after_late_answers(engine: Engine) {
    let WithNotifier {
        s,
        address,
        database: _database,
        process: _notifier,
    } = WithNotifier::start(
        engine,
        &PEERS,
        &[
            ("AGILEPM_NOTIFIER_TIMEOUT_MS", "1000"),
            ("AGILEPM_NOTIFIER_RETRY_FIRST_DELAY_MS", "20"),
            ("AGILEPM_NOTIFIER_RETRY_MAX_DELAY_MS", "200"),
            ("AGILEPM_NOTIFIER_MAX_ATTEMPTS", "100"),
        ],
    )
    .await;
    // Refuses the first two attempts of each id, then 20 % at random, and answers 5 %
    // only after the notifier stopped waiting.
    let receiver = Receiver::start(Behaviour {
        fail_first: 2,
        fail_ratio: 0.2,
        late_ratio: 0.05,
        late_by: Duration::from_millis(1500),
        ..Behaviour::default()
    })
    .await;
    let mut client = notifier_at(address);
    let (_, secret) = subscribe(
        &mut client,
        &receiver.url(),
        &[
            NotificationType::BacklogItemDone,
            NotificationType::SprintStarted,
        ],
    )
    .await;
    receiver.trust(&[secret]);
    start_sprint(&s).await;
    let mut items = Vec::new();
    for _ in 0..20 {
        items.push(s.committed_item(2, 2).await);
    }
    let (first, rest) = items.split_at(10);
    run_items_down(&s, first, 4, 2).await;
    // Down for a while: the notifier fails to connect, then the receiver comes back.
    receiver
        .wait_until("some deliveries", Duration::from_secs(60), |log| {
            accepted_ids(log).len() >= 3
        })
        .await;
    receiver.stop();
    run_items_down(&s, rest, 4, 2).await;
    let pending = ListDeliveriesRequest {
        state: DeliveryState::Pending as i32,
        ..Default::default()
    };
    wait_for_deliveries(&client, pending, "a connection failure", |pending| {
        pending
            .iter()
            .any(|d| d.last_error.contains("could not connect"))
    })
    .await;
    receiver.restart().await;

    let expected: BTreeSet<String> = done_event_ids(&s)
        .await
        .into_iter()
        .chain(planning_event_ids(&s, "agilepm.planning.v1.SprintStarted").await)
        .collect();
    assert_eq!(expected.len(), 21);
    receiver
        .wait_until("every notification", Duration::from_secs(120), |log| {
            accepted_ids(log).len() >= expected.len()
        })
        .await;
    settled_deliveries(&mut client).await;
    let log = receiver.received();
    assert_eq!(
        accepted_ids(&log),
        expected,
        "each event told, nothing else"
    );
    assert!(log.iter().any(|r| r.answer == Answer::Refused));
    // An id accepted twice was first answered too late.
    for (id, count) in accepted_counts(&log) {
        if count > 1 {
            let first_late = log
                .iter()
                .filter(|r| r.webhook_id == id)
                .find(|r| matches!(r.answer, Answer::Accepted | Answer::Late))
                .map(|r| r.answer);
            assert_eq!(
                first_late,
                Some(Answer::Late),
                "{id} accepted {count} times"
            );
        }
    }
    assert!(log.iter().all(|r| r.answer != Answer::BadSignature));
    s.system.stop().await;
}

async fn a_killed_notifier_loses_nothing_and_invents_no_webhook_id(engine: Engine) {
    let WithNotifier {
        s,
        database,
        address,
        process: mut notifier,
    } = WithNotifier::start(engine, &PEERS, &[]).await;
    let receiver = Receiver::start(Behaviour::default()).await;
    let mut client = notifier_at(address);
    let (_, secret) = subscribe(
        &mut client,
        &receiver.url(),
        &[NotificationType::BacklogItemDone],
    )
    .await;
    receiver.trust(&[secret]);
    let mut items = Vec::new();
    for _ in 0..30 {
        items.push(s.committed_item(3, 3).await);
    }
    let sent = Arc::new(AtomicUsize::new(0));
    let workers = estimate_down(&s, &items, 8, 3, sent);
    receiver
        .wait_until(
            "a third of the deliveries",
            Duration::from_secs(60),
            |log| accepted_ids(log).len() >= 10,
        )
        .await;
    notifier.start_kill().expect("SIGKILL the notifier");
    assert!(!notifier.wait().await.unwrap().success());
    let address = free_address();
    let _restarted = spawn_notifier(&s.system, address, database.url(), &[]);
    wait_serving(address, "the restarted notifier").await;
    for worker in workers {
        worker.await.unwrap();
    }
    for (item, _) in &items {
        s.wait_for(item, BacklogItemStatus::Done, false).await;
    }
    let expected = done_event_ids(&s).await;
    assert_eq!(expected.len(), 30);
    receiver
        .wait_until("every DONE told", Duration::from_secs(60), |log| {
            accepted_ids(log).len() >= expected.len()
        })
        .await;
    let mut client = notifier_at(address);
    let deliveries = settled_deliveries(&mut client).await;
    let log = receiver.received();
    assert_eq!(accepted_ids(&log), expected, "no id lost, none invented");
    assert_eq!(deliveries.len(), 30, "one delivery per event");
    // One subscription's deliveries go one at a time: at most the one under way when
    // the notifier was killed is sent again.
    let twice = accepted_counts(&log).values().filter(|n| **n > 1).count();
    assert!(twice <= 1, "{twice} ids sent twice");
    s.system.stop().await;
}

async fn a_delivery_that_keeps_failing_is_dead_lettered_and_redelivered(engine: Engine) {
    let metrics = free_address().to_string();
    let WithNotifier {
        s,
        address,
        database: _database,
        process: _notifier,
    } = WithNotifier::start(
        engine,
        &PEERS,
        &[
            ("AGILEPM_NOTIFIER_MAX_ATTEMPTS", "3"),
            ("AGILEPM_NOTIFIER_RETRY_FIRST_DELAY_MS", "20"),
            ("AGILEPM_METRICS_ADDRESS", &metrics),
            // Delivered ones are pruned a few seconds on; dead letters stay.
            ("AGILEPM_NOTIFIER_KEEP_DELIVERED_SECS", "5"),
        ],
    )
    .await;
    let metrics: SocketAddr = metrics.parse().unwrap();
    // Refuses everything, with a megabyte of body the notifier must not keep.
    let receiver = Receiver::start(Behaviour {
        always_fail: true,
        refusal_bytes: 1 << 20,
        ..Behaviour::default()
    })
    .await;
    let mut client = notifier_at(address);
    let (subscription, secret) = subscribe(
        &mut client,
        &receiver.url(),
        &[NotificationType::SprintStarted],
    )
    .await;
    receiver.trust(&[secret]);
    start_sprint(&s).await;
    let dead = wait_for_deliveries(
        &client,
        of(&subscription, DeliveryState::Dead),
        "dead-lettered",
        |dead| dead.len() == 1,
    )
    .await
    .remove(0);
    assert_eq!(dead.attempts, 3);
    assert_eq!(dead.last_http_status, 500);
    assert!(
        dead.last_error.starts_with("HTTP 500"),
        "{}",
        dead.last_error
    );
    assert_eq!(
        dead.last_error, "HTTP 500 Internal Server Error",
        "the status line only: no byte of the receiver's body reaches the tenant"
    );
    assert!(
        dead.last_error.len() < 400,
        "the refusal's body is cut: {}",
        dead.last_error.len()
    );
    let attempts = receiver.received();
    assert_eq!(attempts.len(), 3);
    assert!(attempts.iter().all(|r| r.webhook_id == dead.webhook_id));
    let scrape = Scrape::of(metrics).await.unwrap();
    assert_eq!(
        scrape.sum("agilepm_notifier_deliveries_dead_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        scrape.sum(
            "agilepm_notifier_attempts_failed_total",
            &[("reason", "status")]
        ),
        Some(3.0)
    );

    // Listed by creation time too.
    let in_an_hour = prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() + 3600,
        nanos: 0,
    };
    let created = |from: Option<prost_types::Timestamp>, to: Option<prost_types::Timestamp>| {
        listed(
            &client,
            ListDeliveriesRequest {
                create_time_from: from,
                create_time_to: to,
                ..Default::default()
            },
        )
    };
    assert_eq!(created(Some(in_an_hour), None).await.len(), 0);
    assert_eq!(created(None, Some(in_an_hour)).await.len(), 1);

    // Fixed, and sent again on command, with the same webhook-id.
    receiver.behave(Behaviour::default());
    let redelivered = client
        .redeliver_deliveries(RedeliverDeliveriesRequest {
            target: Some(redeliver_deliveries_request::Target::SubscriptionId(
                subscription.subscription_id.clone(),
            )),
        })
        .await
        .unwrap()
        .into_inner()
        .redelivered;
    assert_eq!(redelivered, 1);
    let log = receiver
        .wait_until("the redelivery", Duration::from_secs(30), |log| {
            !accepted_ids(log).is_empty()
        })
        .await;
    assert_eq!(
        accepted_ids(&log),
        BTreeSet::from([dead.webhook_id.clone()])
    );
    let deliveries = settled_deliveries(&mut client).await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].state, DeliveryState::Delivered as i32);
    let scrape = Scrape::of(metrics).await.unwrap();
    assert_eq!(
        scrape.sum("agilepm_notifier_deliveries_sent_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        scrape.sum("agilepm_notifier_delivery_latency_seconds_count", &[]),
        Some(1.0)
    );
    // Only dead letters are sent again.
    let again = client
        .redeliver_deliveries(RedeliverDeliveriesRequest {
            target: Some(redeliver_deliveries_request::Target::DeliveryId(
                dead.delivery_id.clone(),
            )),
        })
        .await
        .unwrap()
        .into_inner()
        .redelivered;
    assert_eq!(again, 0);
    // Another tenant sees none of it.
    let mut globex = notifier(agilepm_testkit::channel(
        address,
        &agilepm_testkit::person_token("globex-po", "globex", &Role::TENANT_ROLES),
    ));
    assert!(
        listed(&globex, ListDeliveriesRequest::default())
            .await
            .is_empty()
    );
    // The delivered one is pruned once it is older than the notifier keeps them.
    wait_for_deliveries(
        &client,
        ListDeliveriesRequest::default(),
        "pruned",
        <[Delivery]>::is_empty,
    )
    .await;
    let refused = globex
        .redeliver_deliveries(RedeliverDeliveriesRequest {
            target: Some(redeliver_deliveries_request::Target::DeliveryId(
                dead.delivery_id.clone(),
            )),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    s.system.stop().await;
}

async fn a_hanging_or_redirecting_endpoint_holds_back_no_other(engine: Engine) {
    let WithNotifier {
        s,
        address,
        database: _database,
        process: _notifier,
    } = WithNotifier::start(
        engine,
        &PEERS,
        &[
            ("AGILEPM_NOTIFIER_TIMEOUT_MS", "500"),
            ("AGILEPM_NOTIFIER_MAX_ATTEMPTS", "2"),
            ("AGILEPM_NOTIFIER_RETRY_FIRST_DELAY_MS", "20"),
        ],
    )
    .await;
    // One endpoint answers only after the notifier gave up; one redirects elsewhere.
    let hanging = Receiver::start(Behaviour {
        late_ratio: 1.0,
        late_by: Duration::from_secs(3),
        ..Behaviour::default()
    })
    .await;
    let elsewhere = Receiver::start(Behaviour::default()).await;
    let redirecting = Receiver::start(Behaviour {
        redirect: Some((307, elsewhere.url())),
        ..Behaviour::default()
    })
    .await;
    let good = Receiver::start(Behaviour::default()).await;
    let mut client = notifier_at(address);
    let done = [NotificationType::BacklogItemDone];
    let (slow, secret) = subscribe(&mut client, &hanging.url(), &done).await;
    hanging.trust(&[secret]);
    let (redirected, secret) = subscribe(&mut client, &redirecting.url(), &done).await;
    elsewhere.trust(&[secret]);
    let (_, secret) = subscribe(&mut client, &good.url(), &done).await;
    good.trust(&[secret]);

    let mut items = Vec::new();
    for _ in 0..10 {
        items.push(s.committed_item(1, 1).await);
    }
    run_items_down(&s, &items, 2, 1).await;
    good.wait_until(
        "every DONE at the good endpoint",
        Duration::from_secs(30),
        |log| accepted_ids(log).len() == 10,
    )
    .await;
    // Meanwhile the hanging endpoint's lane is still at it (each of its deliveries
    // takes two 500 ms deadlines).
    let still_pending = listed(&client, of(&slow, DeliveryState::Pending)).await;
    assert!(
        !still_pending.is_empty(),
        "the hanging endpoint cannot have finished"
    );
    // A redirect to another origin is not followed: its deliveries end dead, and the
    // other origin is never called.
    let dead = wait_for_deliveries(
        &client,
        of(&redirected, DeliveryState::Dead),
        "10 dead",
        |dead| dead.len() == 10,
    )
    .await;
    assert!(
        dead.iter()
            .all(|d| d.last_http_status == 307 && d.last_error.contains("not followed")),
        "{:?}",
        dead[0].last_error
    );
    assert!(elsewhere.received().is_empty());
    s.system.stop().await;
}

/// An estimate of task `id` to `hours` on `date`.
fn estimate_on(id: &str, hours: i32, date: String) -> EstimateTaskHoursRemainingRequest {
    EstimateTaskHoursRemainingRequest {
        date,
        ..estimate(id, hours)
    }
}

async fn burndown_hours(s: &Sprinting, sprint_id: &str) -> Vec<(i64, f64)> {
    ReportServiceClient::new(s.system.channel(ServiceName::Planning, "acme"))
        .get_sprint_burndown(GetSprintBurndownRequest {
            sprint_id: sprint_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .days
        .iter()
        .map(|d| (d.hours_remaining, d.ideal_hours_remaining))
        .collect()
}

/// The system with a notifier judging sprint health (a 10 % margin, judging 50 ms after
/// estimates change), a receiver subscribed to `types`, and a client of the notifier.
async fn judging_health(
    engine: Engine,
    types: &[NotificationType],
) -> (WithNotifier, Receiver, NotifierServiceClient<PeerChannel>) {
    let with = WithNotifier::start(
        engine,
        &PEERS[..3],
        &[
            ("AGILEPM_NOTIFIER_AT_RISK_MARGIN_PERCENT", "10"),
            ("AGILEPM_NOTIFIER_HEALTH_SETTLE_MS", "50"),
        ],
    )
    .await;
    let receiver = Receiver::start(Behaviour::default()).await;
    let mut client = notifier_at(with.address);
    let (_, secret) = subscribe(&mut client, &receiver.url(), types).await;
    receiver.trust(&[secret]);
    (with, receiver, client)
}

async fn a_sprint_falling_behind_is_at_risk_once_and_one_on_track_is_not(engine: Engine) {
    let (
        WithNotifier {
            mut s,
            database: _database,
            process: _notifier,
            ..
        },
        receiver,
        mut client,
    ) = judging_health(
        engine,
        &[
            NotificationType::SprintAtRisk,
            NotificationType::SprintBackOnTrack,
        ],
    )
    .await;

    // Two five-day sprints from today, 100 hours each: the ideal line is 100, 75, 50,
    // 25, 0, and the margin 10 hours.
    // Tomorrow (the team's day may be ahead of UTC's): one sprint burned 10 hours, the
    // other 20. Each sprint's estimates land before it starts (only active sprints are
    // judged), so no judging pass sees one task estimated and the other not, nor the
    // tenant's day moved to tomorrow by one sprint before the other was estimated for it.
    let mut tasks = s.tasks();
    s.replan(StatusTransitionMode::Automatic, day(0), day(4))
        .await;
    let behind = s.sprint.id.clone();
    let (_, behind_tasks) = s.committed_item(2, 50).await;
    for task in &behind_tasks {
        tasks
            .estimate_task_hours_remaining(estimate_on(task, 45, day(1)))
            .await
            .unwrap();
    }
    start_sprint(&s).await;
    s.replan(StatusTransitionMode::Automatic, day(0), day(4))
        .await;
    let on_track = s.sprint.id.clone();
    let (_, on_track_tasks) = s.committed_item(2, 50).await;
    for task in &on_track_tasks {
        tasks
            .estimate_task_hours_remaining(estimate_on(task, 40, day(1)))
            .await
            .unwrap();
    }
    start_sprint(&s).await;
    let behind_days = burndown_hours(&s, &behind).await;
    assert_eq!(
        &behind_days[..2],
        &[(100, 100.0), (90, 75.0)],
        "90 > 75 + 10: at risk"
    );
    let on_track_days = burndown_hours(&s, &on_track).await;
    assert_eq!(
        &on_track_days[..2],
        &[(100, 100.0), (80, 75.0)],
        "80 <= 85: on track"
    );

    let log = receiver
        .wait_until("the sprint at risk", Duration::from_secs(30), |log| {
            !log.is_empty()
        })
        .await;
    let told = &log[0].body;
    assert_eq!(told["type"], "sprint.at_risk");
    assert_eq!(told["data"]["sprint_id"], behind.as_str());
    assert_eq!(told["data"]["day"], day(1).as_str());
    assert_eq!(told["data"]["hours_remaining"], 90);
    assert_eq!(told["data"]["ideal_hours_remaining"], 75.0);
    assert_eq!(told["data"]["margin_hours"], 10.0);
    // Still behind after another estimate the same day: not told again.
    tasks
        .estimate_task_hours_remaining(estimate_on(&behind_tasks[0], 44, day(1)))
        .await
        .unwrap();
    // Then it catches up: 70 <= 85.
    for task in &behind_tasks {
        tasks
            .estimate_task_hours_remaining(estimate_on(task, 35, day(1)))
            .await
            .unwrap();
    }
    let log = receiver
        .wait_until("back on track", Duration::from_secs(30), |log| {
            log.iter().any(|r| r.body["type"] == "sprint.back_on_track")
        })
        .await;
    let told: Vec<(String, String)> = log
        .iter()
        .map(|r| {
            (
                r.body["type"].as_str().unwrap().to_owned(),
                r.body["data"]["sprint_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        told,
        vec![
            ("sprint.at_risk".to_owned(), behind.clone()),
            ("sprint.back_on_track".to_owned(), behind.clone()),
        ],
        "the sprint on track ({on_track}) is never told about"
    );
    settled_deliveries(&mut client).await;
    assert_eq!(receiver.received().len(), 2);
    s.system.stop().await;
}

/// A zone whose date differs from UTC's now, and whose next midnight is at least an hour
/// away (so the team's today holds for the whole test): UTC-12's evening before 11:00 UTC,
/// else UTC+14's next day.
fn a_zone_a_day_off_utc() -> (&'static str, chrono::NaiveDate) {
    use chrono::Timelike;
    let now = chrono::Utc::now();
    let zone = if now.hour() < 11 {
        chrono_tz::Etc::GMTPlus12
    } else {
        chrono_tz::Etc::GMTMinus14
    };
    let team_today = now.with_timezone(&zone).date_naive();
    assert_ne!(team_today, now.date_naive(), "{zone} is a day off UTC now");
    (zone.name(), team_today)
}

/// The notifier judges a sprint on its team's days, a day off UTC's: a sprint of 100
/// hours over five days from the team's today, its items committed and their tasks
/// defined today, then re-estimated unchanged for the team's tomorrow (the latest day an
/// estimate may be dated), is told at risk on that day (100 h against an ideal of 75).
/// Before, the day the item joined (a team behind UTC) or the latest date allowed (a team
/// ahead) was UTC's, and nothing was told.
async fn a_sprint_is_judged_on_its_team_s_days_not_utc_s(engine: Engine) {
    let (
        WithNotifier {
            mut s,
            database: _database,
            process: _notifier,
            ..
        },
        receiver,
        _client,
    ) = judging_health(engine, &[NotificationType::SprintAtRisk]).await;

    let (zone, team_today) = a_zone_a_day_off_utc();
    TeamServiceClient::new(s.system.channel(ServiceName::Planning, "acme"))
        .update_team_settings(UpdateTeamSettingsRequest {
            settings: Some(TeamSettings {
                time_zone: zone.into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["time_zone".into()],
            }),
            expected_version: None,
        })
        .await
        .expect("set the team's zone");
    let team_tomorrow = team_today + chrono::Days::new(1);
    s.replan(
        StatusTransitionMode::Automatic,
        team_today.to_string(),
        (team_today + chrono::Days::new(4)).to_string(),
    )
    .await;
    let sprint = s.sprint.id.clone();
    let (_, tasks) = s.committed_item(2, 50).await;
    let mut client_tasks = s.tasks();
    for task in &tasks {
        client_tasks
            .estimate_task_hours_remaining(estimate_on(task, 50, team_tomorrow.to_string()))
            .await
            .expect("the team's tomorrow is within the bound");
    }
    start_sprint(&s).await;
    assert_eq!(
        &burndown_hours(&s, &sprint).await[..2],
        &[(100, 100.0), (100, 75.0)],
        "the item counts from the team's today"
    );

    let log = receiver
        .wait_until(
            "the sprint at risk on its team's day",
            Duration::from_secs(30),
            |log| !log.is_empty(),
        )
        .await;
    let told = &log[0].body;
    assert_eq!(told["type"], "sprint.at_risk");
    assert_eq!(told["data"]["sprint_id"], sprint.as_str());
    assert_eq!(
        told["data"]["day"],
        team_tomorrow.to_string().as_str(),
        "judged on the team's day in {zone}"
    );
    assert_eq!(told["data"]["hours_remaining"], 100);
    assert_eq!(told["data"]["ideal_hours_remaining"], 75.0);
    s.system.stop().await;
}

async fn subscriptions_are_validated_scoped_and_rotate(engine: Engine) {
    let system = TestSystem::start(engine, &ServiceName::ALL).await;
    let s = Sprinting::prepare(system, StatusTransitionMode::Automatic).await;
    let mut client = notifier(s.system.channel(ServiceName::Notifier, "acme"));
    let receiver = Receiver::start(Behaviour::default()).await;

    // Bad input names its field and changes nothing.
    for (url, types, field) in [
        ("ftp://example.com/x", vec![1], "target_url"),
        ("https://user:pw@example.com/", vec![1], "target_url"),
        ("not a url", vec![1], "target_url"),
        ("https://example.com/", vec![], "notification_types"),
        ("https://example.com/", vec![1, 1], "notification_types"),
        ("https://example.com/", vec![42], "notification_types"),
    ] {
        let refused = client
            .create_subscription(CreateSubscriptionRequest {
                request_id: uuid::Uuid::new_v4().to_string(),
                target_url: url.into(),
                notification_types: types,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{url}");
        assert!(
            refused.message().contains(field),
            "{url}: {}",
            refused.message()
        );
    }
    let listed = client
        .list_subscriptions(ListSubscriptionsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .subscriptions;
    assert!(listed.is_empty());

    // Only a product owner manages subscriptions; another tenant does not see them.
    let viewer = agilepm_testkit::person_token("vic", "acme", &[Role::Viewer]);
    let refused = notifier(s.system.channel(ServiceName::Notifier, &viewer))
        .create_subscription(CreateSubscriptionRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            target_url: receiver.url(),
            notification_types: vec![NotificationType::SprintStarted as i32],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let (subscription, old_secret) = subscribe(
        &mut client,
        &receiver.url(),
        &[NotificationType::SprintStarted],
    )
    .await;
    let refused = notifier(s.system.channel(ServiceName::Notifier, "globex"))
        .get_subscription(GetSubscriptionRequest {
            subscription_id: subscription.subscription_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);

    // A rotation signs with both secrets during the overlap: a receiver that already
    // switched to the new one verifies the delivery.
    let rotated = client
        .rotate_subscription_secret(RotateSubscriptionSecretRequest {
            subscription_id: subscription.subscription_id.clone(),
            overlap_seconds: 3600,
            request_id: uuid::Uuid::new_v4().to_string(),
            expected_version: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(rotated.signing_secret, old_secret);
    assert!(
        rotated
            .subscription
            .unwrap()
            .previous_secret_expire_time
            .is_some()
    );
    receiver.trust(&[rotated.signing_secret]);
    start_sprint(&s).await;
    let log = receiver
        .wait_until("the sprint started", Duration::from_secs(30), |log| {
            !log.is_empty()
        })
        .await;
    assert_eq!(log[0].answer, Answer::Accepted);
    assert_eq!(log[0].signatures, 2, "the new and the previous secret sign");

    // At most 25 subscriptions per tenant.
    for _ in 1..25 {
        subscribe(
            &mut client,
            &receiver.url(),
            &[NotificationType::TaskImpeded],
        )
        .await;
    }
    let refused = client
        .create_subscription(CreateSubscriptionRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            target_url: receiver.url(),
            notification_types: vec![NotificationType::TaskImpeded as i32],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    let mut seen = 0;
    let mut page_token = String::new();
    loop {
        let page = client
            .list_subscriptions(ListSubscriptionsRequest {
                page_size: 10,
                page_token,
            })
            .await
            .unwrap()
            .into_inner();
        seen += page.subscriptions.len();
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen, 25);
    s.system.stop().await;
}

/// Issue 36 §4: CreateSubscription and RotateSubscriptionSecret are safe to retry (the
/// first response, secret included; another body on the key is refused), Update, Rotate
/// and Delete are guarded by the version, and the bound of 25 holds under 26 creates at
/// once.
async fn subscription_writes_are_safe_to_retry_and_guarded_by_version(engine: Engine) {
    let system = TestSystem::start(engine, &ServiceName::ALL).await;
    let mut client = notifier(system.channel(ServiceName::Notifier, "acme"));
    let receiver = Receiver::start(Behaviour::default()).await;
    let create = CreateSubscriptionRequest {
        request_id: "create-once".into(),
        target_url: receiver.url(),
        notification_types: vec![NotificationType::SprintStarted as i32],
        description: "retried".into(),
        disabled: false,
    };
    let first = client
        .create_subscription(create.clone())
        .await
        .unwrap()
        .into_inner();
    let again = client
        .create_subscription(create.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        again, first,
        "a retry answers the first response, secret included"
    );
    let other = CreateSubscriptionRequest {
        description: "another body".into(),
        ..create.clone()
    };
    let refused = client.create_subscription(other).await.unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
    let missing = CreateSubscriptionRequest {
        request_id: String::new(),
        ..create.clone()
    };
    let refused = client.create_subscription(missing).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("request_id"), "{refused:?}");
    let listed = client
        .list_subscriptions(ListSubscriptionsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .subscriptions;
    assert_eq!(listed.len(), 1, "one subscription for the retried create");
    let subscription = first.subscription.unwrap();
    assert_eq!(subscription.version, 1);
    let id = subscription.subscription_id.clone();

    // A retried rotation returns the first one's secret and leaves the original secret
    // overlapping: receivers holding it still verify.
    let rotate = RotateSubscriptionSecretRequest {
        subscription_id: id.clone(),
        overlap_seconds: 3600,
        request_id: "rotate-once".into(),
        expected_version: Some(1),
    };
    let rotated = client
        .rotate_subscription_secret(rotate.clone())
        .await
        .unwrap()
        .into_inner();
    let retried = client
        .rotate_subscription_secret(rotate)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried.signing_secret, rotated.signing_secret);
    assert_eq!(rotated.subscription.as_ref().unwrap().version, 2);
    let current = client
        .get_subscription(GetSubscriptionRequest {
            subscription_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap();
    assert_eq!(current.version, 2, "the retry rotated nothing");
    receiver.trust(std::slice::from_ref(&first.signing_secret));
    let s = Sprinting::prepare(system, StatusTransitionMode::Automatic).await;
    start_sprint(&s).await;
    let log = receiver
        .wait_until("the sprint started", Duration::from_secs(30), |log| {
            !log.is_empty()
        })
        .await;
    assert_eq!(
        (log[0].answer, log[0].signatures),
        (Answer::Accepted, 2),
        "the original secret still signs beside the new one"
    );

    // Stale versions are ABORTED and change nothing.
    let stale_update = client
        .update_subscription(UpdateSubscriptionRequest {
            subscription_id: id.clone(),
            enabled: Some(false),
            expected_version: Some(1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(stale_update.code(), Code::Aborted, "{stale_update:?}");
    let stale_rotate = client
        .rotate_subscription_secret(RotateSubscriptionSecretRequest {
            subscription_id: id.clone(),
            request_id: "rotate-stale".into(),
            expected_version: Some(1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(stale_rotate.code(), Code::Aborted);
    let stale_delete = client
        .delete_subscription(DeleteSubscriptionRequest {
            subscription_id: id.clone(),
            expected_version: Some(1),
        })
        .await
        .unwrap_err();
    assert_eq!(stale_delete.code(), Code::Aborted);
    let disabled = client
        .update_subscription(UpdateSubscriptionRequest {
            subscription_id: id.clone(),
            enabled: Some(false),
            expected_version: Some(2),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap();
    assert_eq!((disabled.enabled, disabled.version), (false, 3));
    client
        .delete_subscription(DeleteSubscriptionRequest {
            subscription_id: id,
            expected_version: Some(3),
        })
        .await
        .unwrap();

    // 26 creates at once leave exactly 25, whatever the interleaving.
    let mut globex = notifier(s.system.channel(ServiceName::Notifier, "globex"));
    let creates = (0..26).map(|n| {
        let mut client = globex.clone();
        let request = CreateSubscriptionRequest {
            request_id: format!("parallel-{n}"),
            target_url: receiver.url(),
            notification_types: vec![NotificationType::TaskImpeded as i32],
            ..Default::default()
        };
        async move {
            client
                .create_subscription(request)
                .await
                .map_err(|e| e.code())
        }
    });
    let results = futures::future::join_all(creates).await;
    let created = results.iter().filter(|r| r.is_ok()).count();
    let exhausted = results
        .iter()
        .filter(|r| r.as_ref().err() == Some(&Code::ResourceExhausted))
        .count();
    assert_eq!((created, exhausted), (25, 1), "{results:?}");
    let page = globex
        .list_subscriptions(ListSubscriptionsRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.subscriptions.len(), 25);
    // A deleted subscription gives its place back.
    globex
        .delete_subscription(DeleteSubscriptionRequest {
            subscription_id: page.subscriptions[0].subscription_id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    globex
        .create_subscription(CreateSubscriptionRequest {
            request_id: "after-a-delete".into(),
            target_url: receiver.url(),
            notification_types: vec![NotificationType::TaskImpeded as i32],
            ..Default::default()
        })
        .await
        .unwrap();
    s.system.stop().await;
}

/// Issue 36 §4: the sender re-reads the subscription before every attempt. An endpoint
/// slow enough that a window of deliveries waits behind it; after the first arrives the
/// subscription is re-targeted: the old endpoint gets at most the attempt already under
/// way, the new one all the rest. Then disabled: nothing more goes anywhere until it is
/// enabled again.
async fn a_changed_subscription_gets_no_further_attempt_at_its_old_target(engine: Engine) {
    const ITEMS: usize = 8;
    let system = TestSystem::start(engine, &ServiceName::ALL).await;
    let s = Sprinting::prepare(system, StatusTransitionMode::Automatic).await;
    let mut client = notifier(s.system.channel(ServiceName::Notifier, "acme"));
    let slow = Receiver::start(Behaviour {
        answer_after: Duration::from_millis(300),
        ..Behaviour::default()
    })
    .await;
    let fresh = Receiver::start(Behaviour::default()).await;
    let (subscription, secret) = subscribe(
        &mut client,
        &slow.url(),
        &[NotificationType::BacklogItemDone],
    )
    .await;
    slow.trust(std::slice::from_ref(&secret));
    fresh.trust(&[secret]);
    let mut tasks = s.tasks();
    for _ in 0..ITEMS {
        let (_, item_tasks) = s.committed_item(1, 1).await;
        tasks
            .estimate_task_hours_remaining(estimate(&item_tasks[0], 0))
            .await
            .unwrap();
    }
    slow.wait_until("the first delivery", Duration::from_secs(30), |log| {
        !log.is_empty()
    })
    .await;
    client
        .update_subscription(UpdateSubscriptionRequest {
            subscription_id: subscription.subscription_id.clone(),
            target_url: Some(fresh.url()),
            expected_version: Some(subscription.version),
            ..Default::default()
        })
        .await
        .unwrap();
    let at_old = slow.received().len();
    let log = fresh
        .wait_until(
            "the rest at the new target",
            Duration::from_secs(30),
            |log| log.len() + slow.received().len() >= ITEMS,
        )
        .await;
    // Once the update is acknowledged, the old target gets at most the one attempt that
    // was already under way (its lane re-reads the subscription before each next one).
    let at_old_finally = slow.received().len();
    assert!(
        at_old_finally <= at_old + 1 && at_old_finally < ITEMS,
        "the old target got {at_old_finally}, {at_old} of them before the update returned"
    );
    let ids: BTreeSet<String> = slow
        .received()
        .iter()
        .chain(log.iter())
        .map(|r| r.webhook_id.clone())
        .collect();
    assert_eq!(ids.len(), ITEMS, "every DONE delivered once in effect");
    settled_deliveries(&mut client).await;
    s.system.stop().await;
}

/// Issue 36 §4: a keyed notifier sends only to public addresses unless the operator
/// allows a network. Targets that are or resolve to loopback, private or metadata
/// addresses are refused when written, naming target_url; a subscription written while
/// loopback was allowed gets no request once it is not: the attempt resolves the name
/// and refuses (reason refused), and the receiver sees nothing. A refusal's body never
/// reaches the tenant: the error is the status line.
async fn targets_that_resolve_to_private_addresses_are_refused(engine: Engine) {
    let WithNotifier {
        s,
        database,
        address,
        mut process,
    } = WithNotifier::start(engine, &PEERS[..3], &[]).await;
    let mut client = notifier_at(address);
    let receiver = Receiver::start(Behaviour::default()).await;
    let port = receiver.url().rsplit(':').next().unwrap().to_owned();
    let by_name = format!("http://localhost:{port}");
    let (named, secret) =
        subscribe(&mut client, &by_name, &[NotificationType::SprintStarted]).await;
    let (_literal, _) = subscribe(
        &mut client,
        &receiver.url(),
        &[NotificationType::SprintStarted],
    )
    .await;
    receiver.trust(&[secret]);
    process.start_kill().unwrap();
    let _ = process.wait().await;

    // The same database, public addresses only.
    let address = free_address();
    let public_only = spawn_notifier(
        &s.system,
        address,
        database.url(),
        &[
            ("AGILEPM_NOTIFIER_ALLOWED_NETWORKS", ""),
            ("AGILEPM_NOTIFIER_MAX_ATTEMPTS", "1"),
        ],
    );
    wait_serving(address, "the notifier, public addresses only").await;
    let mut client = notifier_at(address);
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.1.2.3/hook",
        "http://[::1]:9/hook",
    ] {
        let refused = client
            .create_subscription(CreateSubscriptionRequest {
                request_id: uuid::Uuid::new_v4().to_string(),
                target_url: url.into(),
                notification_types: vec![NotificationType::SprintStarted as i32],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Code::FailedPrecondition,
            "{url}: {refused:?}"
        );
        assert!(
            refused.message().contains("target_url")
                && refused.message().contains("not a public address"),
            "{url}: {refused:?}"
        );
    }
    start_sprint(&s).await;
    let dead = wait_for_deliveries(
        &client,
        ListDeliveriesRequest {
            state: DeliveryState::Dead as i32,
            ..Default::default()
        },
        "both deliveries refused",
        |dead| dead.len() == 2,
    )
    .await;
    assert!(
        dead.iter()
            .all(|d| d.last_error.contains("not a public address")),
        "{dead:?}"
    );
    assert!(
        dead.iter()
            .any(|d| d.subscription_id == named.subscription_id)
    );
    assert!(
        receiver.received().is_empty(),
        "no request reached loopback"
    );
    drop(public_only);
    s.system.stop().await;
}

/// The webhook path over TLS (reqwest on rustls with ring, the one provider): an
/// endpoint behind a TLS front with a certificate of a CA made here, trusted by the
/// notifier through `SSL_CERT_FILE` (how a deployment adds a private CA to the host's
/// roots). The notification arrives, signed, on the first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webhook_goes_over_https_to_an_endpoint_the_roots_trust() {
    agilepm_testkit::init();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = crate::tls::server_certificate(dir.path(), "endpoint");
    let ca = ca.display().to_string();
    let w = WithNotifier::start(
        Engine::Sqlite,
        &[
            ServiceName::BacklogItem,
            ServiceName::Task,
            ServiceName::Planning,
        ],
        &[("SSL_CERT_FILE", ca.as_str())],
    )
    .await;
    let receiver = Receiver::start(Behaviour::default()).await;
    let front = crate::tls::tls_front(&cert, &key, receiver.address()).await;
    let mut client = notifier_at(w.address);
    let (_, secret) = subscribe(
        &mut client,
        &format!("https://{front}/hook"),
        &[NotificationType::SprintStarted],
    )
    .await;
    receiver.trust(&[secret]);
    start_sprint(&w.s).await;
    let log = receiver
        .wait_until(
            "the sprint's start, over https",
            Duration::from_secs(30),
            |log| !accepted_ids(log).is_empty(),
        )
        .await;
    assert_eq!(log[0].answer, Answer::Accepted, "signed and verified");
    let deliveries = settled_deliveries(&mut client).await;
    assert!(
        deliveries
            .iter()
            .all(|d| d.state == DeliveryState::Delivered as i32 && d.attempts == 1),
        "{deliveries:?}"
    );
    w.s.system.stop().await;
}
