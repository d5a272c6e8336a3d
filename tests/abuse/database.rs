//! The database going away is answered promptly and specifically: a frozen database
//! yields DEADLINE_EXCEEDED or UNAVAILABLE within the default deadline, then refusals at
//! once while health says NOT_SERVING; a subscriber keeps its heartbeats and is then told
//! UNAVAILABLE; everything works again when the database is back. A locked SQLite file
//! and connections terminated under the service answer UNAVAILABLE, never INTERNAL.

use std::net::SocketAddr;
use std::time::Duration;

use agilepm_proto::events::v1::event_feed_service_client::EventFeedServiceClient;
use agilepm_proto::events::v1::{SubscribeRequest, subscribe_response};
use agilepm_proto::task::v1::GetTaskRequest;
use agilepm_proto::task::v1::task_service_client::TaskServiceClient;
use agilepm_testkit::Engine;
use futures::StreamExt as _;
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::process::{Launch, Scene, TENANT, estimate, member};
use crate::proxy::FreezingProxy;

/// The machine's PostgreSQL, as the suite's URL names it.
pub fn postgres_address() -> SocketAddr {
    let url = agilepm_testkit::postgres_admin_url().expect("PostgreSQL");
    let authority = url.split('@').nth(1).unwrap().split('/').next().unwrap();
    authority.parse().expect("host:port as an IP address")
}

/// A client with no deadline of its own (unlike the testkit's), as a careless caller.
fn no_deadline(address: SocketAddr) -> TaskServiceClient<Channel> {
    TaskServiceClient::new(
        Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .connect_lazy(),
    )
}

fn as_member<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", member(TENANT)).parse().unwrap(),
    );
    request
}

/// The frozen PostgreSQL left calls without a deadline unanswered for 150 s and
/// a subscriber silent. Frozen here through a proxy, with a default deadline of 3 s and
/// subscribers told after 4 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_postgres_is_answered_within_the_deadline_then_at_once() {
    agilepm_testkit::init();
    if agilepm_testkit::postgres_admin_url().is_none() {
        return;
    }
    let _serial = crate::SERIAL.lock().await;
    let upstream = postgres_address();
    let proxy = FreezingProxy::start(upstream).await;
    let launch = Launch {
        env: vec![
            ("AGILEPM_DEFAULT_DEADLINE_SECS", "3".into()),
            ("AGILEPM_FEED_UNAVAILABLE_AFTER_SECS", "4".into()),
        ],
        ..Launch::default()
    };
    let scene = Scene::start_via(Engine::Postgres, 1, launch, |url| {
        proxy.route(url, upstream)
    })
    .await;
    let task = scene.tasks[0].clone();
    let mut subscription = EventFeedServiceClient::new(scene.task.channel(&member(TENANT)))
        .subscribe(SubscribeRequest {
            heartbeat_interval_ms: 200,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // The task's definition is delivered.
    let last_position = loop {
        let message = subscription.next().await.unwrap().unwrap();
        if let Some(subscribe_response::Kind::Event(event)) = message.kind {
            break event.position;
        }
    };

    proxy.freeze();
    let frozen_at = Instant::now();
    let mut careless = no_deadline(scene.task.address);
    let answer = careless
        .estimate_task_hours_remaining(as_member(estimate(&task, 1)))
        .await
        .expect_err("no estimate while the database is frozen");
    let answered_in = frozen_at.elapsed();
    println!(
        "frozen: a call without a deadline answered {:?} in {answered_in:?}",
        answer.code()
    );
    assert!(
        matches!(answer.code(), Code::DeadlineExceeded | Code::Unavailable),
        "{answer:?}"
    );
    assert!(
        answered_in < Duration::from_millis(4500),
        "answered in {answered_in:?}"
    );

    // The subscriber got heartbeats all along, then is told.
    let mut heartbeats = 0;
    let told = loop {
        match tokio::time::timeout(Duration::from_secs(2), subscription.next()).await {
            Ok(Some(Ok(message))) => {
                if matches!(message.kind, Some(subscribe_response::Kind::Heartbeat(_))) {
                    heartbeats += 1;
                }
            }
            Ok(Some(Err(status))) => break status,
            Ok(None) => panic!("the stream ended without a status"),
            Err(_) => panic!("the subscriber went silent after {heartbeats} heartbeats"),
        }
    };
    let told_in = frozen_at.elapsed();
    println!(
        "frozen: the subscriber got {heartbeats} heartbeats, then {:?} after {told_in:?}",
        told.code()
    );
    assert_eq!(told.code(), Code::Unavailable, "{told:?}");
    assert!(heartbeats >= 10, "{heartbeats} heartbeats while frozen");
    assert!(told_in < Duration::from_secs(12), "told after {told_in:?}");

    // Health says so, and calls are refused at once.
    let deadline = Instant::now() + Duration::from_secs(10);
    while scene.task.health().await != Some(ServingStatus::NotServing) {
        assert!(Instant::now() < deadline, "health never said NOT_SERVING");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Not ready, but alive: a restart would not bring the database back.
    assert_eq!(scene.task.liveness().await, Some(ServingStatus::Serving));
    let asked = Instant::now();
    let refused = careless
        .get_task(as_member(GetTaskRequest {
            id: task.clone(),
            view: 0,
        }))
        .await
        .expect_err("refused while the database is away");
    println!(
        "frozen, NOT_SERVING: refused {:?} in {:?}",
        refused.code(),
        asked.elapsed()
    );
    assert_eq!(refused.code(), Code::Unavailable);
    assert!(
        asked.elapsed() < Duration::from_millis(500),
        "{:?}",
        asked.elapsed()
    );

    // Back: served again, and a subscriber resuming from its last position misses nothing.
    proxy.thaw();
    scene.task.wait_serving(Duration::from_secs(20)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let estimated = loop {
        match careless
            .estimate_task_hours_remaining(as_member(estimate(&task, 2)))
            .await
        {
            Ok(response) => break response.into_inner(),
            Err(status) => {
                assert!(Instant::now() < deadline, "never served again: {status:?}");
                assert!(
                    matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded),
                    "{status:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let hours = estimated.task.unwrap().hours_remaining;
    let mut resumed = EventFeedServiceClient::new(scene.task.channel(&member(TENANT)))
        .subscribe(SubscribeRequest {
            after_position: last_position,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let message = tokio::time::timeout_at(deadline, resumed.next())
            .await
            .expect("the estimate after the freeze is delivered")
            .unwrap()
            .unwrap();
        if let Some(subscribe_response::Kind::Event(event)) = message.kind
            && event.event_type.ends_with("TaskHoursRemainingEstimated")
        {
            let payload: agilepm_proto::task::v1::TaskHoursRemainingEstimated =
                prost::Message::decode(event.payload.unwrap().value.as_slice()).unwrap();
            if payload.hours_remaining == hours {
                break;
            }
        }
    }
    scene.stop().await;
}

/// A SQLite file locked by another process (a backup, an operator's shell): writes are
/// answered within the default deadline, reads go on, and writes work once it is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_sqlite_database_answers_writes_within_the_deadline() {
    agilepm_testkit::init();
    let _serial = crate::SERIAL.lock().await;
    let launch = Launch {
        env: vec![("AGILEPM_DEFAULT_DEADLINE_SECS", "2".into())],
        ..Launch::default()
    };
    let mut database_url = String::new();
    let scene = Scene::start_via(Engine::Sqlite, 1, launch, |url| {
        database_url = url.to_owned();
        url.to_owned()
    })
    .await;
    let task = scene.tasks[0].clone();
    sqlx::any::install_default_drivers();
    let mut holder = <sqlx::AnyConnection as sqlx::Connection>::connect(&database_url)
        .await
        .unwrap();
    sqlx::Executor::execute(&mut holder, "BEGIN EXCLUSIVE")
        .await
        .unwrap();

    let mut careless = no_deadline(scene.task.address);
    let asked = Instant::now();
    let answer = careless
        .estimate_task_hours_remaining(as_member(estimate(&task, 1)))
        .await
        .expect_err("no write while the file is locked");
    println!(
        "locked: a write answered {:?} in {:?}",
        answer.code(),
        asked.elapsed()
    );
    assert!(
        matches!(answer.code(), Code::DeadlineExceeded | Code::Unavailable),
        "{answer:?}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    careless
        .get_task(as_member(GetTaskRequest {
            id: task.clone(),
            view: 0,
        }))
        .await
        .expect("reads go on");

    sqlx::Executor::execute(&mut holder, "ROLLBACK")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while let Err(status) = careless
        .estimate_task_hours_remaining(as_member(estimate(&task, 2)))
        .await
    {
        assert!(Instant::now() < deadline, "never served again: {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    scene.stop().await;
}

/// The PostgreSQL shutdown surfaced 57P01 as INTERNAL. Every connection of the
/// service terminated under it (what a restart does to them): each call meanwhile is
/// served or answered UNAVAILABLE, never INTERNAL, and the service recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_connections_answer_unavailable_never_internal() {
    agilepm_testkit::init();
    let Some(admin_url) = agilepm_testkit::postgres_admin_url() else {
        return;
    };
    let _serial = crate::SERIAL.lock().await;
    let mut database_url = String::new();
    let scene = Scene::start_via(Engine::Postgres, 1, Launch::default(), |url| {
        database_url = url.to_owned();
        url.to_owned()
    })
    .await;
    let database = database_url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&admin_url).await.unwrap();
    let mut client = scene.estimator();
    let (mut served, mut unavailable) = (0, 0);
    for round in 0..5u64 {
        let terminated: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
        )
        .bind(&database)
        .fetch_all(&admin)
        .await
        .unwrap();
        assert!(!terminated.is_empty(), "the service had connections");
        for n in 0..10 {
            match client
                .estimate_task_hours_remaining(estimate(&scene.tasks[0], round * 10 + n))
                .await
            {
                Ok(_) => served += 1,
                Err(status) if status.code() == Code::Unavailable => unavailable += 1,
                Err(status) => panic!("after termination: {status:?}"),
            }
        }
    }
    println!("terminated connections: {served} calls served, {unavailable} UNAVAILABLE");
    assert!(served > 0, "the service recovered by itself");
    admin.close().await;
    scene.stop().await;
}
