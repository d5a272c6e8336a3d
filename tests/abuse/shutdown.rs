//! Stopping with work in flight. The issue found a pod with a feed subscriber attached
//! waiting for SIGKILL: the subscription never ended, and the server's drain waited for
//! it. Now SIGTERM ends subscriptions at once with UNAVAILABLE, drains the calls in
//! flight (up to `AGILEPM_DRAIN_DEADLINE_SECS`) and exits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agilepm_proto::events::v1::SubscribeRequest;
use agilepm_proto::events::v1::event_feed_service_client::EventFeedServiceClient;
use agilepm_proto::task::v1::GetTaskRequest;
use agilepm_testkit::Engine;
use futures::StreamExt as _;
use tokio::task::JoinSet;
use tonic::Code;

use tonic_health::pb::health_check_response::ServingStatus;

use crate::process::{Launch, Scene, TENANT, TaskProcess, estimate, member};
use crate::proxy::FreezingProxy;

agilepm_testkit::engine_tests!(sigterm_ends_subscriptions_and_exits_within_2_s_losing_nothing);

/// Sends `task` SIGTERM and waits (30 s at most) for it to exit: how, and how long it
/// took.
async fn terminate(task: &mut TaskProcess) -> (std::process::ExitStatus, Duration) {
    let asked = tokio::time::Instant::now();
    task.terminate();
    let exit = tokio::time::timeout(Duration::from_secs(30), task.exited())
        .await
        .expect("the process exits");
    (exit, asked.elapsed())
}

/// The drain deadline the stuck-call test sets.
const DRAIN_DEADLINE: Duration = Duration::from_secs(1);

/// A call stuck on a frozen database does not hold shutdown hostage: the process waits
/// the drain deadline for it, then exits. (PostgreSQL only: the freeze is a proxy.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_call_gets_the_drain_deadline_and_no_longer() {
    agilepm_testkit::init();
    if agilepm_testkit::postgres_admin_url().is_none() {
        return;
    }
    let _serial = crate::SERIAL.lock().await;
    let upstream = crate::database::postgres_address();
    let proxy = FreezingProxy::start(upstream).await;
    let launch = Launch {
        env: vec![
            (
                "AGILEPM_DRAIN_DEADLINE_SECS",
                DRAIN_DEADLINE.as_secs().to_string(),
            ),
            ("AGILEPM_DEFAULT_DEADLINE_SECS", "60".into()),
        ],
        ..Launch::default()
    };
    let mut scene = Scene::start_via(Engine::Postgres, 1, launch, |url| {
        proxy.route(url, upstream)
    })
    .await;
    proxy.freeze();
    let mut client = scene.estimator();
    let task = scene.tasks[0].clone();
    let stuck = tokio::spawn(async move {
        client
            .estimate_task_hours_remaining(estimate(&task, 1))
            .await
    });
    // Health turns NOT_SERVING two probes after the freeze; the estimate sent before
    // that has long been admitted and is waiting on the database.
    let frozen = tokio::time::Instant::now() + Duration::from_secs(30);
    while scene.task.health().await != Some(ServingStatus::NotServing) {
        assert!(tokio::time::Instant::now() < frozen, "health never noticed");
        tokio::task::yield_now().await;
    }
    assert!(!stuck.is_finished(), "the estimate is still in flight");

    let (exit, took) = terminate(&mut scene.task).await;
    eprintln!("a stuck call: exited {took:?} after SIGTERM, {exit}");
    assert!(
        took >= DRAIN_DEADLINE,
        "it waited for the call in flight: {took:?}"
    );
    assert!(
        took <= DRAIN_DEADLINE + Duration::from_secs(1),
        "then stopped: {took:?}; log:\n{}",
        scene.task.log()
    );
    assert!(
        stuck.await.unwrap().is_err(),
        "the stuck call was not answered OK"
    );
    proxy.thaw();
    scene.stop().await;
}

/// Writers estimating while the process is told to stop, each on a task of its own.
const WRITERS: usize = 4;

/// Estimates acknowledged before the SIGTERM is sent, so that writes are in flight.
const WRITES_BEFORE_STOP: u64 = 40;

/// A subscriber attached and four writers estimating; SIGTERM. The process exits within
/// 2 s with status 0, the subscriber is told UNAVAILABLE (resubscribe elsewhere), and
/// every estimate acknowledged is there when the service starts again on its database.
async fn sigterm_ends_subscriptions_and_exits_within_2_s_losing_nothing(engine: Engine) {
    let _serial = crate::SERIAL.lock().await;
    let mut scene = Scene::start(engine, WRITERS, Launch::default()).await;
    let mut feed = EventFeedServiceClient::new(scene.task.channel(&member(TENANT)));
    let request = SubscribeRequest {
        heartbeat_interval_ms: 100,
        ..Default::default()
    };
    let mut stream = feed.subscribe(request).await.unwrap().into_inner();
    let subscriber = tokio::spawn(async move {
        loop {
            match stream.next().await {
                Some(Ok(_)) => {}
                Some(Err(status)) => return Some(status),
                None => return None,
            }
        }
    });

    // Each writer estimates its task until the process stops answering, and reports
    // the last estimate it saw acknowledged.
    let acknowledged = Arc::new(AtomicU64::new(0));
    let mut writers = JoinSet::new();
    for task in scene.tasks.clone() {
        let mut client = scene.estimator();
        let acknowledged = acknowledged.clone();
        writers.spawn(async move {
            let mut last = None;
            for n in 0.. {
                match client
                    .estimate_task_hours_remaining(estimate(&task, n))
                    .await
                {
                    Ok(_) => {
                        last = Some(n);
                        acknowledged.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => break,
                }
            }
            (task, last)
        });
    }
    let flowing = tokio::time::Instant::now() + Duration::from_secs(30);
    while acknowledged.load(Ordering::Relaxed) < WRITES_BEFORE_STOP {
        assert!(
            tokio::time::Instant::now() < flowing,
            "the writers never got going"
        );
        tokio::task::yield_now().await;
    }

    let (exit, took) = terminate(&mut scene.task).await;
    eprintln!("{engine:?}: exited {took:?} after SIGTERM, {exit}");
    assert!(
        exit.success(),
        "a graceful exit: {exit}; log:\n{}",
        scene.task.log()
    );
    assert!(took <= Duration::from_secs(2), "took {took:?} to exit");

    let ended = subscriber.await.unwrap();
    let status = ended.expect("the subscription ends with a status, not a silent close");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    let outcomes = writers.join_all().await;
    scene.restart_task().await;
    let mut client = scene.estimator();
    for (task, last) in outcomes {
        let stored = client
            .get_task(GetTaskRequest {
                id: task.clone(),
                view: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap()
            .hours_remaining;
        // The last acknowledged estimate, or the one after it, which may have committed
        // while its answer was lost with the connection (defined with 100 hours).
        let acknowledged = last.map_or(100, |n| estimate(&task, n).hours_remaining);
        let in_flight = estimate(&task, last.map_or(0, |n| n + 1)).hours_remaining;
        assert!(
            stored == acknowledged || stored == in_flight,
            "task {task}: {stored} h stored, {acknowledged} h acknowledged last"
        );
    }
    scene.stop().await;
}
