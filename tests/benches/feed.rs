//! Event feed benchmark: catch-up throughput and commit-to-delivery latency, on SQLite and
//! PostgreSQL.
//!
//! ```sh
//! cargo bench -p agilepm-tests --bench feed                 # both engines
//! cargo bench -p agilepm-tests --bench feed -- sqlite       # one engine
//! ```
//! PostgreSQL needs `AGILEPM_TEST_POSTGRES_URL` (e.g. `postgres://root@127.0.0.1:5432/test`).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agilepm_platform::events::feed::FeedOptions;
use agilepm_platform::storage::db::{Db, UnitOfWork};
use agilepm_platform::storage::outbox::{Subject, append};
use agilepm_proto::events::v1::event_feed_service_client::EventFeedServiceClient;
use agilepm_proto::events::v1::{SubscribeRequest, subscribe_response};
use agilepm_proto::task::v1::TaskRenamed;
use agilepm_testkit::{Engine, FeedServer, TestDb, channel};
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

const CATCH_UP_EVENTS: usize = 100_000;
const LATENCY_EVENTS: usize = 2_000;
const LATENCY_RATE_PER_SEC: u64 = 500;
/// Writers in the neighbour database, and how long each holds its transaction open.
const NEIGHBOUR_WRITERS: usize = 2;
const NEIGHBOUR_HOLD: Duration = Duration::from_millis(2);

#[tokio::main]
async fn main() {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    for (name, engine) in [("sqlite", Engine::Sqlite), ("postgres", Engine::Postgres)] {
        if wanted.is_empty() || wanted.iter().any(|w| w == name) {
            run(name, engine).await;
        }
    }
}

async fn server_for(engine: Engine) -> (TestDb, FeedServer) {
    let database = match engine {
        Engine::Postgres if agilepm_testkit::postgres_admin_url().is_none() => {
            panic!(
                "set AGILEPM_TEST_POSTGRES_URL=postgres://root@127.0.0.1:5432/test to benchmark PostgreSQL"
            )
        }
        _ => TestDb::create(engine).await,
    };
    let db = database.connect_platform().await;
    (
        database,
        FeedServer::start(db, FeedOptions::default()).await,
    )
}

async fn run(name: &str, engine: Engine) {
    println!("== event feed on {name} ==");
    let (_database, server) = server_for(engine).await;

    // Catch-up: 100k events already committed (1000 per transaction), read from the start.
    let started = Instant::now();
    for chunk in 0..CATCH_UP_EVENTS / 1000 {
        let mut uow = server.db.begin().await.unwrap();
        for i in 0..1000 {
            let task = format!("task-{}", (chunk * 1000 + i) % 977);
            append_renamed(&mut uow, &task, &i.to_string()).await;
        }
        uow.commit().await.unwrap();
    }
    println!(
        "  load:      {CATCH_UP_EVENTS} events appended in {:.2?}",
        started.elapsed()
    );

    let mut client =
        EventFeedServiceClient::new(channel(server.address, &agilepm_testkit::operator_token()));
    let started = Instant::now();
    let mut stream = client
        .subscribe(SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut received = 0;
    let mut last_position = String::new();
    while received < CATCH_UP_EVENTS {
        if let Some(subscribe_response::Kind::Event(event)) =
            stream.next().await.unwrap().unwrap().kind
        {
            received += 1;
            last_position = event.position;
        }
    }
    let elapsed = started.elapsed();
    println!(
        "  catch-up:  {CATCH_UP_EVENTS} events in {elapsed:.2?} = {:.0} events/s",
        CATCH_UP_EVENTS as f64 / elapsed.as_secs_f64()
    );

    // Commit-to-delivery: one event per transaction at a steady rate, a subscriber tailing;
    // first alone on the server, then beside another database whose writers keep a
    // transaction open most of the time (as the other services' do under load).
    let quiet = commit_to_delivery(&server, &mut client, &last_position).await;
    report("alone", &quiet);
    let neighbour = TestDb::create(engine).await;
    let stop = CancellationToken::new();
    let neighbour_db = neighbour.connect_platform().await;
    let writers: Vec<_> = (0..NEIGHBOUR_WRITERS)
        .map(|_| tokio::spawn(keep_writing(neighbour_db.clone(), stop.clone())))
        .collect();
    let last_position = quiet.last_position.clone();
    let busy = commit_to_delivery(&server, &mut client, &last_position).await;
    stop.cancel();
    let mut neighbour_commits = 0;
    for writer in writers {
        neighbour_commits += writer.await.unwrap();
    }
    report(
        &format!("beside a busy database ({neighbour_commits} commits there)"),
        &busy,
    );
}

/// What one commit-to-delivery run measured.
struct Delivery {
    /// Sorted latencies, commit call -> event received.
    latencies: Vec<Duration>,
    /// Where the run's last event sits, for the next run to tail from.
    last_position: String,
}

async fn commit_to_delivery(
    server: &FeedServer,
    client: &mut EventFeedServiceClient<agilepm_platform::wire::client::PeerChannel>,
    after_position: &str,
) -> Delivery {
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut tail = client
        .subscribe(SubscribeRequest {
            after_position: after_position.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let writer = {
        let db = server.db.clone();
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut ticker =
                tokio::time::interval(Duration::from_micros(1_000_000 / LATENCY_RATE_PER_SEC));
            for i in 0..LATENCY_EVENTS {
                ticker.tick().await;
                let mut uow = db.begin().await.unwrap();
                let id = append_renamed(&mut uow, "t", &i.to_string()).await;
                // Timed from the start of the commit call: includes the commit itself.
                sent.lock().unwrap().insert(id, Instant::now());
                uow.commit().await.unwrap();
            }
        })
    };
    let mut latencies = Vec::with_capacity(LATENCY_EVENTS);
    let mut last_position = String::new();
    while latencies.len() < LATENCY_EVENTS {
        if let Some(subscribe_response::Kind::Event(event)) =
            tail.next().await.unwrap().unwrap().kind
        {
            let at = Instant::now();
            let start = sent.lock().unwrap().remove(&event.event_id).unwrap();
            latencies.push(at - start);
            last_position = event.position;
        }
    }
    writer.await.unwrap();
    latencies.sort();
    Delivery {
        latencies,
        last_position,
    }
}

fn report(what: &str, delivery: &Delivery) {
    let latencies = &delivery.latencies;
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "  latency:   commit -> delivery at {LATENCY_RATE_PER_SEC}/s over {LATENCY_EVENTS} events, {what}: p50 {:.2?}  p99 {:.2?}  max {:.2?}",
        pct(0.50),
        pct(0.99),
        latencies[latencies.len() - 1]
    );
}

/// Appends one `TaskRenamed` for `task` in `uow`; returns its event id.
async fn append_renamed(uow: &mut UnitOfWork, task: &str, name: &str) -> String {
    let event = TaskRenamed {
        task_id: task.into(),
        tenant_id: "acme".into(),
        backlog_item_id: String::new(),
        name: name.into(),
    };
    let subject = Subject {
        aggregate_type: "Task",
        aggregate_id: task,
        tenant_id: "acme",
    };
    append(uow, subject, &event).await.unwrap().to_string()
}

/// Commits one event after another in the neighbour database, each transaction kept open
/// for a moment after its write, until `stop`; returns how many it committed.
async fn keep_writing(db: Db, stop: CancellationToken) -> u64 {
    let mut commits = 0;
    while !stop.is_cancelled() {
        let mut uow = db.begin().await.unwrap();
        append_renamed(&mut uow, "neighbour", &commits.to_string()).await;
        tokio::time::sleep(NEIGHBOUR_HOLD).await;
        uow.commit().await.unwrap();
        commits += 1;
    }
    commits
}
