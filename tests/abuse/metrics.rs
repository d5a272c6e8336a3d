//! Metrics as an operator's Prometheus reads them: the task process serves
//! `--metrics-address`, and a scrape after a known workload finds every series the
//! issue asks for, with the values that workload implies.

use agilepm_platform::wire::config::ServiceName;
use agilepm_proto::events::v1::event_feed_service_client::EventFeedServiceClient;
use agilepm_proto::events::v1::{SubscribeRequest, subscribe_response};
use agilepm_proto::task::v1::EstimateTaskHoursRemainingRequest;
use agilepm_testkit::Engine;
use agilepm_testkit::metrics::{Scrape, free_address};
use futures::StreamExt as _;
use tokio::task::JoinSet;
use tonic::Code;

use crate::process::{Launch, Scene, estimate};

agilepm_testkit::engine_tests!(a_scrape_shows_red_group_commit_feed_and_pool_series);

/// Clients estimating at once, and estimates each.
const CLIENTS: usize = 8;
const ESTIMATES_EACH: u64 = 5;
const TASKS: usize = 4;

async fn a_scrape_shows_red_group_commit_feed_and_pool_series(engine: Engine) {
    let _serial = crate::SERIAL.lock().await;
    let metrics = free_address();
    let launch = Launch {
        env: vec![("AGILEPM_METRICS_ADDRESS", metrics.to_string())],
        ..Launch::default()
    };
    let scene = Scene::start(engine, TASKS, launch).await;
    // A subscriber spanning tenants, as the coordinator is.
    let coordinator = agilepm_testkit::service_token(ServiceName::Coordinator);
    let mut feed = EventFeedServiceClient::new(scene.task.channel(&coordinator));
    let mut stream = feed
        .subscribe(SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();

    let mut clients = JoinSet::new();
    for client_number in 0..CLIENTS {
        let mut client = scene.estimator();
        let task = scene.tasks[client_number % TASKS].clone();
        clients.spawn(async move {
            for n in 0..ESTIMATES_EACH {
                client
                    .estimate_task_hours_remaining(estimate(&task, n))
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
    let estimated = CLIENTS as u64 * ESTIMATES_EACH;
    // Two refusals: a task that does not exist, a date that does not parse.
    let mut client = scene.estimator();
    let missing = client
        .estimate_task_hours_remaining(estimate(&uuid::Uuid::now_v7().to_string(), 1))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let malformed = client
        .estimate_task_hours_remaining(EstimateTaskHoursRemainingRequest {
            date: "someday".into(),
            ..estimate(&scene.tasks[0], 1)
        })
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    // Every event committed (defining, estimating; an estimate that changes nothing
    // writes none): read through the feed's head.
    let head = feed
        .get_feed_head(agilepm_proto::events::v1::GetFeedHeadRequest {})
        .await
        .unwrap()
        .into_inner()
        .head_position;
    let mut events = 0u64;
    loop {
        let message = stream.next().await.unwrap().unwrap();
        if let Some(subscribe_response::Kind::Event(event)) = message.kind {
            events += 1;
            if event.position == head {
                break;
            }
        }
    }
    assert!(events > TASKS as u64, "{events} events");

    let scrape = Scrape::of(metrics).await.unwrap();
    let shown = &scrape.text;
    let served = |code: &str| {
        scrape
            .sum(
                "rpc_server_call_duration_seconds_count",
                &[
                    ("rpc_service", "agilepm.task.v1.TaskService"),
                    ("rpc_method", "EstimateTaskHoursRemaining"),
                    ("rpc_grpc_status_code", code),
                ],
            )
            .unwrap_or(0.0)
    };
    // RED: requests, errors by code, durations.
    assert_eq!(served("0"), estimated as f64, "{shown}");
    assert_eq!(served("5"), 1.0, "{shown}");
    assert_eq!(served("3"), 1.0, "{shown}");
    let seconds = scrape
        .sum(
            "rpc_server_call_duration_seconds_sum",
            &[("rpc_method", "EstimateTaskHoursRemaining")],
        )
        .unwrap();
    assert!(
        seconds > 0.0 && seconds < estimated as f64 * 5.0,
        "{seconds} s"
    );
    assert!(
        scrape
            .sum(
                "rpc_server_call_duration_seconds_bucket",
                &[("rpc_method", "EstimateTaskHoursRemaining"), ("le", "+Inf")],
            )
            .unwrap()
            >= estimated as f64
    );
    // The calls it made to backlog-item (defining a task checks its item).
    let made = scrape
        .sum(
            "rpc_client_call_duration_seconds_count",
            &[
                ("rpc_service", "agilepm.backlog.v1.BacklogItemService"),
                ("rpc_grpc_status_code", "0"),
            ],
        )
        .unwrap_or(0.0);
    assert!(
        made >= TASKS as f64,
        "{made} calls to backlog-item\n{shown}"
    );

    // Group commit: every estimate that reached the writer was in a batch of it, and
    // nothing waits now.
    let writer = [("writer", "task.estimate")];
    let in_batches = scrape
        .sum("agilepm_group_commit_batch_size_sum", &writer)
        .unwrap();
    let batches = scrape
        .sum("agilepm_group_commit_batch_size_count", &writer)
        .unwrap();
    assert!(
        (estimated as f64..=estimated as f64 + 1.0).contains(&in_batches),
        "{in_batches} estimates in batches"
    );
    assert!(batches >= 1.0 && batches <= in_batches, "{batches} batches");
    assert_eq!(
        scrape.sum("agilepm_group_commit_queued", &writer),
        Some(0.0)
    );

    // The feed: its head, the subscriber, how late events reached it.
    let service = [("service", "task")];
    let head = scrape.sum("agilepm_feed_head", &service).unwrap();
    assert!(head >= events as f64, "head {head}");
    assert_eq!(scrape.sum("agilepm_feed_subscribers", &service), Some(1.0));
    let delivered = scrape
        .sum("agilepm_feed_delivery_lag_seconds_count", &service)
        .unwrap();
    assert!(delivered >= events as f64, "{delivered} deliveries timed");

    // The pool: within its ceiling (the scene sets 8).
    assert_eq!(
        scrape.sum("agilepm_db_pool_max_connections", &service),
        Some(8.0)
    );
    let open = scrape.sum("agilepm_db_pool_connections", &service).unwrap();
    assert!((1.0..=8.0).contains(&open), "{open} connections");

    // What the alert rules read (deploy/prometheus/alerts.yaml): readiness, and the age of
    // the oldest event the outbox keeps (seconds at most: it was written during the test).
    assert_eq!(
        scrape.sum(
            "agilepm_ready",
            &[("service", "task"), ("condition", "database")]
        ),
        Some(1.0),
        "{shown}"
    );
    let oldest = scrape
        .sum("agilepm_outbox_oldest_age_seconds", &service)
        .unwrap_or_else(|| panic!("no outbox age in {shown}"));
    assert!(
        (0.0..600.0).contains(&oldest),
        "oldest event {oldest} s old"
    );
    drop(stream);
    scene.stop().await;
}
