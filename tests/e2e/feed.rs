//! The transactional outbox and its event feed: replay then tail, resume, no gaps under
//! concurrent writers, tenant scoping, filters, and the follower's checkpointing.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use agilepm_platform::events::feed::FeedOptions;
use agilepm_platform::events::follower::{
    BatchHandler, CheckpointStore, DbCheckpoint, FollowOptions, follow,
};
use agilepm_platform::storage::db::{Db, Engine};
use agilepm_platform::storage::outbox::{Subject, append};
use agilepm_platform::wire::client::PeerChannel;
use agilepm_proto::events::v1::event_feed_service_client::EventFeedServiceClient;
use agilepm_proto::events::v1::{Event, SubscribeRequest, subscribe_response};
use agilepm_proto::task::v1::TaskRenamed;
use agilepm_testkit::{FeedServer, TestDb, channel, engine_tests};
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::codec::Streaming;

engine_tests!(
    replay_then_tail_delivers_every_event_once_in_order,
    a_subscriber_that_stops_reading_still_gets_every_event_once_in_order,
    resuming_from_any_position_delivers_exactly_what_follows,
    an_open_transaction_never_lets_a_later_commit_overtake_it,
    an_event_waits_only_for_older_transactions_of_its_own_database,
    a_commit_wakes_the_subscribers_of_another_replica,
    concurrent_writers_and_a_resuming_subscriber_lose_nothing,
    foreign_and_malformed_positions_are_refused,
    subscribers_see_only_their_tenant_unless_granted_all,
    event_type_and_aggregate_filters_apply,
    heartbeats_carry_the_head_position,
    the_follower_saves_its_checkpoint_only_after_the_handler_succeeds,
    batches_handled_at_once_are_saved_in_feed_order,
    a_slow_checkpoint_save_holds_no_batch_back,
    two_databases_of_one_service_have_feeds_of_their_own,
);

/// Test databases of one service are copies of one migrated template on PostgreSQL;
/// each still gets a feed id of its own, or a position from one would be taken by the
/// other.
async fn two_databases_of_one_service_have_feeds_of_their_own(engine: Engine) {
    let migrations = agilepm::system::migrations(agilepm_platform::wire::config::ServiceName::Task);
    let (first, second) = (
        TestDb::migrated(engine, migrations).await,
        TestDb::migrated(engine, migrations).await,
    );
    let mut ids = Vec::new();
    for database in [&first, &second] {
        let db = database.connect(migrations).await;
        let id: String = sqlx::query_scalar("SELECT feed_id FROM feed_identity")
            .fetch_one(db.pool())
            .await
            .unwrap();
        db.close().await;
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1]);
}

/// Appends one event in its own transaction; returns its event id.
pub(crate) async fn append_one(db: &Db, tenant: &str, aggregate: &str, name: &str) -> String {
    let mut uow = db.begin().await.unwrap();
    let id = append_in(&mut uow, tenant, aggregate, name).await;
    uow.commit().await.unwrap();
    id
}

async fn append_in(
    uow: &mut agilepm_platform::storage::db::UnitOfWork,
    tenant: &str,
    aggregate: &str,
    name: &str,
) -> String {
    let event = TaskRenamed {
        task_id: aggregate.into(),
        tenant_id: tenant.into(),
        backlog_item_id: String::new(),
        name: name.into(),
    };
    let subject = Subject {
        aggregate_type: "Task",
        aggregate_id: aggregate,
        tenant_id: tenant,
    };
    append(uow, subject, &event).await.unwrap().to_string()
}

pub(crate) async fn feed_server(engine: Engine) -> (TestDb, FeedServer) {
    let database = TestDb::create(engine).await;
    let db = database.connect_platform().await;
    let options = FeedOptions {
        batch_size: 64,
        ..FeedOptions::default()
    };
    (database, FeedServer::start(db, options).await)
}

pub(crate) fn client(server: &FeedServer, token: &str) -> EventFeedServiceClient<PeerChannel> {
    EventFeedServiceClient::new(channel(server.address, token))
}

pub(crate) async fn open(
    client: &mut EventFeedServiceClient<PeerChannel>,
    request: SubscribeRequest,
) -> Streaming<agilepm_proto::events::v1::SubscribeResponse> {
    client.subscribe(request).await.unwrap().into_inner()
}

pub(crate) fn after(position: &str) -> SubscribeRequest {
    SubscribeRequest {
        after_position: position.into(),
        heartbeat_interval_ms: 100,
        ..Default::default()
    }
}

/// Reads `count` events from the stream (skipping heartbeats), failing after 20 s.
pub(crate) async fn take(
    stream: &mut Streaming<agilepm_proto::events::v1::SubscribeResponse>,
    count: usize,
) -> Vec<Event> {
    let mut events = Vec::with_capacity(count);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while events.len() < count {
        let message = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} events arrived", events.len()))
            .expect("stream open")
            .expect("no stream error");
        if let Some(subscribe_response::Kind::Event(event)) = message.kind {
            events.push(event);
        }
    }
    events
}

/// Asserts no event arrives within `window`.
async fn expect_quiet(
    stream: &mut Streaming<agilepm_proto::events::v1::SubscribeResponse>,
    window: Duration,
) {
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(message) = tokio::time::timeout_at(deadline, stream.next()).await {
        let message = message.expect("stream open").expect("no stream error");
        if let Some(subscribe_response::Kind::Event(event)) = message.kind {
            panic!("unexpected event {event:?}");
        }
    }
}

fn ids(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| e.event_id.clone()).collect()
}

async fn replay_then_tail_delivers_every_event_once_in_order(engine: Engine) {
    let (_database, server) = feed_server(engine).await;
    let mut expected = Vec::new();
    for i in 0..150 {
        expected.push(append_one(&server.db, "acme", "task-1", &format!("n{i}")).await);
    }
    let mut feed = client(&server, "acme");
    let mut stream = open(&mut feed, after("")).await;
    let replayed = take(&mut stream, 150).await;
    assert_eq!(ids(&replayed), expected, "replay in append order");

    // Now tail: events committed after the subscription arrive, in order, once.
    let writer = {
        let db = server.db.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..100 {
                ids.push(append_one(&db, "acme", "task-2", &format!("t{i}")).await);
            }
            ids
        })
    };
    let tailed = take(&mut stream, 100).await;
    assert_eq!(ids(&tailed), writer.await.unwrap());
    expect_quiet(&mut stream, Duration::from_millis(300)).await;

    // The payload is the typed event, named by its type URL.
    let payload = replayed[0].payload.as_ref().unwrap();
    assert_eq!(
        payload.type_url,
        "type.googleapis.com/agilepm.task.v1.TaskRenamed"
    );
    let decoded: TaskRenamed = prost::Message::decode(payload.value.as_slice()).unwrap();
    assert_eq!(decoded.name, "n0");
    assert_eq!(replayed[0].event_type, "agilepm.task.v1.TaskRenamed");
}

/// A client that stops reading lets HTTP/2 flow control stop its stream; the hub's
/// deliveries pile up in its mailbox past what it keeps (128), which then becomes a mark
/// to read from the database. Once the client reads again it gets every event once, in
/// order, while a subscriber reading all along was never held back.
async fn a_subscriber_that_stops_reading_still_gets_every_event_once_in_order(engine: Engine) {
    let (_database, server) = feed_server(engine).await;
    let mut stalled = open(&mut client(&server, "acme"), after("")).await;
    let mut reading = open(&mut client(&server, "acme"), after("")).await;
    // Names of 16 KiB fill the stalled stream's flow-control window (2 MiB at most) within
    // ~130 events; every commit is read, and delivered, on its own. (Checked when written:
    // the stalled subscriber's mailbox overflows on both engines.)
    let name = "x".repeat(16 * 1024);
    let writer = {
        let db = server.db.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..600 {
                ids.push(append_one(&db, "acme", "task-1", &name).await);
            }
            ids
        })
    };
    let read_along = take(&mut reading, 600).await;
    let expected = writer.await.unwrap();
    assert_eq!(ids(&read_along), expected, "the reading subscriber");
    let caught_up = take(&mut stalled, 600).await;
    assert_eq!(
        ids(&caught_up),
        expected,
        "the stalled subscriber, once it reads"
    );
    expect_quiet(&mut stalled, Duration::from_millis(300)).await;
}

async fn resuming_from_any_position_delivers_exactly_what_follows(engine: Engine) {
    let (_database, server) = feed_server(engine).await;
    for i in 0..40 {
        append_one(&server.db, "acme", &format!("task-{}", i % 3), "x").await;
    }
    let mut feed = client(&server, "acme");
    let all = take(&mut open(&mut feed, after("")).await, 40).await;
    for cut in [0, 1, 17, 38, 39] {
        let mut stream = open(&mut feed, after(&all[cut].position)).await;
        let rest = take(&mut stream, 39 - cut).await;
        assert_eq!(ids(&rest), ids(&all[cut + 1..]), "resume after #{cut}");
        expect_quiet(&mut stream, Duration::from_millis(150)).await;
    }
}

async fn an_open_transaction_never_lets_a_later_commit_overtake_it(engine: Engine) {
    let (_database, server) = feed_server(engine).await;
    let mut feed = client(&server, "acme");
    let mut stream = open(&mut feed, after("")).await;

    // Transaction A appends and stays open.
    let mut a = server.db.begin().await.unwrap();
    let a_id = append_in(&mut a, "acme", "task-a", "a").await;

    // Transaction B appends and commits (on SQLite it must wait for A's write lock).
    let db = server.db.clone();
    let b = tokio::spawn(async move { append_one(&db, "acme", "task-b", "b").await });
    if engine == Engine::Postgres {
        let b_id = tokio::time::timeout(Duration::from_secs(10), b)
            .await
            .unwrap()
            .unwrap();
        // B is committed and visible, but A (older transaction) is still open: the feed
        // must hold B back, since delivering it would move the cursor past A.
        expect_quiet(&mut stream, Duration::from_millis(600)).await;
        let lost_by_naive = naive_cursor_loses_a(&server.db, &a_id, &b_id, a).await;
        assert!(
            lost_by_naive,
            "a naive seq cursor would have skipped A's event"
        );
        let events = take(&mut stream, 2).await;
        assert_eq!(ids(&events), vec![a_id, b_id], "A first, then B, none lost");
    } else {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!b.is_finished(), "SQLite serialises writers: B waits for A");
        expect_quiet(&mut stream, Duration::from_millis(300)).await;
        a.commit().await.unwrap();
        let b_id = tokio::time::timeout(Duration::from_secs(10), b)
            .await
            .unwrap()
            .unwrap();
        let events = take(&mut stream, 2).await;
        assert_eq!(ids(&events), vec![a_id, b_id]);
    }
}

/// On PostgreSQL an event waits for every older transaction of *its own database* — not
/// for those of other databases on the cluster (another service's, busy all the time
/// under load), which can never write this outbox. When the older transaction that held
/// an event back ends without a commit this feed is told about, the feed must notice on
/// its own, soon after, not at its next fallback poll (set to 60 s here, as is the
/// heartbeat, so only that can deliver in time). On SQLite a commit wakes the feed.
async fn an_event_waits_only_for_older_transactions_of_its_own_database(engine: Engine) {
    let database = TestDb::create(engine).await;
    let options = FeedOptions {
        fallback_poll: Duration::from_secs(60),
        ..FeedOptions::default()
    };
    let server = FeedServer::start(database.connect_platform().await, options).await;
    let mut stream = quiet_subscription(&server).await;

    // An older transaction of another database, open throughout.
    let other = TestDb::create(engine).await;
    let other_db = other.connect_platform().await;
    let mut elsewhere = other_db.begin().await.unwrap();
    if engine == Engine::Sqlite {
        elsewhere.commit().await.unwrap();
        let id = append_one(&server.db, "acme", "task-b", "b").await;
        let arrived = tokio::time::timeout(Duration::from_secs(10), take(&mut stream, 1))
            .await
            .expect("the commit wakes the feed");
        assert_eq!(ids(&arrived), vec![id]);
        other_db.close().await;
        return;
    }
    take_transaction_id(&mut elsewhere).await;
    let first = append_one(&server.db, "acme", "task-a", "a").await;
    let arrived = tokio::time::timeout(Duration::from_secs(10), take(&mut stream, 1))
        .await
        .expect("another database's open transaction does not hold the event back");
    assert_eq!(ids(&arrived), vec![first]);

    // An older transaction of this database, through a connection the server does not
    // share, that writes no event: its commit is announced to nobody.
    let same_db = database.connect_platform().await;
    let mut older = same_db.begin().await.unwrap();
    take_transaction_id(&mut older).await;
    let second = append_one(&server.db, "acme", "task-b", "b").await;
    expect_quiet(&mut stream, Duration::from_millis(300)).await;
    older.commit().await.unwrap();
    let arrived = tokio::time::timeout(Duration::from_secs(10), take(&mut stream, 1))
        .await
        .expect("delivered within seconds of the older transaction's end, not at the poll");
    assert_eq!(ids(&arrived), vec![second]);

    elsewhere.commit().await.unwrap();
    same_db.close().await;
    other_db.close().await;
}

/// Two replicas of a service share one database: a commit through one must wake the
/// other's subscribers. On PostgreSQL the writer announces it (`NOTIFY`) and the other
/// relays it, so it arrives long before the other's fallback poll (60 s here). A SQLite
/// file belongs to one process; a second one finds commits by its poll (300 ms here).
async fn a_commit_wakes_the_subscribers_of_another_replica(engine: Engine) {
    let database = TestDb::create(engine).await;
    let writer = FeedServer::start(database.connect_platform().await, FeedOptions::default()).await;
    let fallback_poll = match engine {
        Engine::Postgres => Duration::from_secs(60),
        Engine::Sqlite => Duration::from_millis(300),
    };
    let options = FeedOptions {
        fallback_poll,
        ..FeedOptions::default()
    };
    let reader = FeedServer::start(database.connect_platform().await, options).await;
    let mut stream = quiet_subscription(&reader).await;

    for name in ["a", "b", "c"] {
        let id = append_one(&writer.db, "acme", "task-a", name).await;
        let arrived = tokio::time::timeout(Duration::from_secs(10), take(&mut stream, 1))
            .await
            .expect("the other replica's commit reached this one's subscriber");
        assert_eq!(ids(&arrived), vec![id]);
    }
}

/// A subscription from the start of `server`'s feed whose heartbeats (every 60 s) cannot
/// stand in for a wake-up, past its first heartbeat.
async fn quiet_subscription(
    server: &FeedServer,
) -> Streaming<agilepm_proto::events::v1::SubscribeResponse> {
    let mut feed = client(server, "acme");
    let request = SubscribeRequest {
        heartbeat_interval_ms: 60_000,
        ..Default::default()
    };
    let mut stream = open(&mut feed, request).await;
    take_heartbeat(&mut stream).await;
    stream
}

/// Makes `uow`'s transaction take its transaction id now, as its first write would.
async fn take_transaction_id(uow: &mut agilepm_platform::storage::db::UnitOfWork) {
    sqlx::query("SELECT pg_current_xact_id()::text")
        .execute(uow.conn())
        .await
        .unwrap();
}

/// Waits for the first heartbeat (sent when a subscription starts).
async fn take_heartbeat(stream: &mut Streaming<agilepm_proto::events::v1::SubscribeResponse>) {
    let message = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("a first heartbeat")
        .expect("stream open")
        .expect("no stream error");
    assert!(matches!(
        message.kind,
        Some(subscribe_response::Kind::Heartbeat(_))
    ));
}

/// PostgreSQL only: shows what `WHERE seq > cursor` would do in the same situation. With
/// A open and B committed it reads B, moves its cursor to B's seq, and after A commits
/// never returns A (A's seq is lower). Commits A. Returns whether the naive cursor lost A.
async fn naive_cursor_loses_a(
    db: &Db,
    a_id: &str,
    b_id: &str,
    a: agilepm_platform::storage::db::UnitOfWork,
) -> bool {
    let naive = |cursor: i64| async move {
        sqlx::query_as::<_, (i64, String)>(
            "SELECT seq, event_id FROM outbox WHERE seq > $1 ORDER BY seq",
        )
        .bind(cursor)
        .fetch_all(db.pool())
        .await
        .unwrap()
    };
    let first = naive(0).await;
    assert_eq!(
        first.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(),
        vec![b_id],
        "naive reader sees B first"
    );
    let cursor = first[0].0;
    a.commit().await.unwrap();
    let second = naive(cursor).await;
    !second.iter().any(|(_, id)| id == a_id)
}

async fn concurrent_writers_and_a_resuming_subscriber_lose_nothing(engine: Engine) {
    const WRITERS: usize = 32;
    const APPENDS: usize = 500;
    let (_database, server) = feed_server(engine).await;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let db = server.db.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..APPENDS {
                append_one(&db, "acme", &format!("task-{w}"), &format!("{i}")).await;
            }
        }));
    }
    // The subscriber takes a few hundred events at a time, disconnects, and resumes from
    // the last position it processed, while the writers are still writing.
    let mut feed = client(&server, "acme");
    let mut seen = HashSet::new();
    let mut position = String::new();
    let mut reconnects = 0;
    let mut per_aggregate_order: std::collections::HashMap<String, i64> =
        std::collections::HashMap::new();
    while seen.len() < WRITERS * APPENDS {
        let mut stream = open(&mut feed, after(&position)).await;
        let chunk = (WRITERS * APPENDS - seen.len()).min(700 + reconnects * 37);
        for event in take(&mut stream, chunk).await {
            assert!(
                seen.insert(event.event_id.clone()),
                "event {} delivered twice",
                event.event_id
            );
            // Within one writer, appends are sequential, so the feed keeps their order.
            let payload: TaskRenamed =
                prost::Message::decode(event.payload.as_ref().unwrap().value.as_slice()).unwrap();
            let n: i64 = payload.name.parse().unwrap();
            let last = per_aggregate_order.insert(event.aggregate_id.clone(), n);
            assert!(
                last.is_none_or(|last| last < n),
                "{} out of order",
                event.aggregate_id
            );
            position = event.position;
        }
        reconnects += 1;
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert!(reconnects >= 5, "the subscriber resumed {reconnects} times");
    assert_eq!(seen.len(), WRITERS * APPENDS);
    let mut stream = open(&mut feed, after(&position)).await;
    expect_quiet(&mut stream, Duration::from_millis(300)).await;
}

async fn foreign_and_malformed_positions_are_refused(engine: Engine) {
    let (_d1, one) = feed_server(engine).await;
    let (_d2, other) = feed_server(engine).await;
    append_one(&other.db, "acme", "t", "x").await;
    let foreign = take(&mut open(&mut client(&other, "acme"), after("")).await, 1)
        .await
        .remove(0)
        .position;
    let mut feed = client(&one, "acme");
    for position in [foreign.as_str(), "nonsense", "a.b.c", "", "x.1"] {
        let result = feed.subscribe(after(position)).await;
        if position.is_empty() {
            assert!(result.is_ok(), "empty means from the beginning");
        } else {
            let error = result.expect_err(position);
            assert_eq!(error.code(), Code::InvalidArgument, "{position}");
            assert!(error.message().contains("after_position"));
        }
    }
}

async fn subscribers_see_only_their_tenant_unless_granted_all(engine: Engine) {
    let (_database, server) = feed_server(engine).await;
    for i in 0..10 {
        append_one(
            &server.db,
            if i % 2 == 0 { "acme" } else { "globex" },
            "t",
            "x",
        )
        .await;
    }
    let acme = take(&mut open(&mut client(&server, "acme"), after("")).await, 5).await;
    assert!(acme.iter().all(|e| e.tenant_id == "acme"));
    let mut globex_stream = open(&mut client(&server, "globex"), after("")).await;
    let globex = take(&mut globex_stream, 5).await;
    assert!(globex.iter().all(|e| e.tenant_id == "globex"));
    expect_quiet(&mut globex_stream, Duration::from_millis(200)).await;
    let everyone = take(
        &mut open(
            &mut client(&server, &agilepm_testkit::operator_token()),
            after(""),
        )
        .await,
        10,
    )
    .await;
    assert_eq!(everyone.len(), 10);
}

async fn event_type_and_aggregate_filters_apply(engine: Engine) {
    let (_database, server) = feed_server(engine).await;
    for i in 0..12 {
        append_one(&server.db, "acme", &format!("task-{}", i % 3), "x").await;
    }
    let mut feed = client(&server, "acme");
    let mut request = after("");
    request.aggregate_ids = vec!["task-1".into()];
    let mut stream = open(&mut feed, request).await;
    let only = take(&mut stream, 4).await;
    assert!(only.iter().all(|e| e.aggregate_id == "task-1"));
    expect_quiet(&mut stream, Duration::from_millis(200)).await;

    let mut request = after("");
    request.event_types = vec!["agilepm.task.v1.TaskRemoved".into()];
    let mut stream = open(&mut feed, request).await;
    expect_quiet(&mut stream, Duration::from_millis(300)).await;
}

async fn heartbeats_carry_the_head_position(engine: Engine) {
    let (_database, server) = feed_server(engine).await;
    let mut last = String::new();
    for _ in 0..3 {
        last = append_one(&server.db, "acme", "t", "x").await;
    }
    let mut feed = client(&server, "acme");
    let mut stream = open(&mut feed, after("")).await;
    let events = take(&mut stream, 3).await;
    assert_eq!(events[2].event_id, last);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let message = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(subscribe_response::Kind::Heartbeat(heartbeat)) = message.kind
            && heartbeat.head_position == events[2].position
        {
            assert!(heartbeat.server_time.is_some());
            break;
        }
    }
    // On PostgreSQL the head is the newest event below the settle horizon, which a
    // transaction the horizon cannot place (one just ended, say) holds back for a moment:
    // ask until it answers, as the heartbeats above were waited for.
    loop {
        let head = feed
            .get_feed_head(agilepm_proto::events::v1::GetFeedHeadRequest {})
            .await
            .unwrap()
            .into_inner()
            .head_position;
        if head == events[2].position {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "GetFeedHead answered {head:?}, not {:?}",
            events[2].position
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `done` every 10 ms until it holds, failing the test with `what` at `deadline`.
async fn wait_until(deadline: tokio::time::Instant, what: &str, mut done: impl FnMut() -> bool) {
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Records what it was given; fails the first `fail_times` batches.
struct Recorder {
    seen: Mutex<Vec<String>>,
    failures_left: Mutex<u32>,
}

impl Recorder {
    /// A recorder that fails its first `failures` batches.
    fn failing_first(failures: u32) -> Recorder {
        Recorder {
            seen: Mutex::new(Vec::new()),
            failures_left: Mutex::new(failures),
        }
    }
}

impl BatchHandler for Recorder {
    async fn handle(&self, batch: &[Event]) -> anyhow::Result<()> {
        {
            let mut left = self.failures_left.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                anyhow::bail!("injected failure");
            }
        }
        self.seen
            .lock()
            .unwrap()
            .extend(batch.iter().map(|e| e.event_id.clone()));
        Ok(())
    }
}

async fn the_follower_saves_its_checkpoint_only_after_the_handler_succeeds(engine: Engine) {
    let (_database, server) = feed_server(engine).await;
    let consumer_db = TestDb::create(engine).await;
    let consumer = consumer_db.connect_platform().await;
    let mut expected = Vec::new();
    for i in 0..30 {
        expected.push(append_one(&server.db, "acme", "t", &i.to_string()).await);
    }
    let checkpoint = DbCheckpoint::new(consumer.clone(), "test-consumer");
    let handler = Recorder::failing_first(2);
    // Saving after every batch here, so each save lands right after its batch.
    let options = FollowOptions {
        max_batch: 8,
        min_backoff: Duration::from_millis(10),
        checkpoint_every: Duration::ZERO,
        ..FollowOptions::default()
    };
    let shutdown = CancellationToken::new();
    let feed = client(&server, &agilepm_testkit::operator_token());
    let run = follow(
        feed.clone(),
        &checkpoint,
        &handler,
        &options,
        shutdown.clone(),
    );
    let all = take(
        &mut open(
            &mut client(&server, &agilepm_testkit::operator_token()),
            after(""),
        )
        .await,
        30,
    )
    .await;
    let wait = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        wait_until(deadline, "follower did not catch up", || {
            handler.seen.lock().unwrap().len() >= 30
        })
        .await;
        // Stop once the last batch's checkpoint has landed (a fixed pause here raced a
        // busy CI machine), or at the deadline; the assertion below tells which.
        while checkpoint.load().await.unwrap() != all[29].position
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shutdown.cancel();
    };
    tokio::join!(run, wait);
    // Failed batches were re-delivered from the checkpoint: nothing skipped, nothing twice.
    assert_eq!(*handler.seen.lock().unwrap(), expected);
    let saved = checkpoint.load().await.unwrap();
    assert_eq!(saved, all[29].position);

    // A restarted follower resumes after the checkpoint: only new events arrive. This
    // one saves at most every 200 ms while busy, and as soon as the stream goes quiet.
    let newer = append_one(&server.db, "acme", "t", "late").await;
    let newer_position = take(
        &mut open(
            &mut client(&server, &agilepm_testkit::operator_token()),
            after(&saved),
        )
        .await,
        1,
    )
    .await[0]
        .position
        .clone();
    let again = Recorder::failing_first(0);
    let throttled = FollowOptions {
        checkpoint_every: Duration::from_millis(200),
        ..options.clone()
    };
    let shutdown = CancellationToken::new();
    let run = follow(feed, &checkpoint, &again, &throttled, shutdown.clone());
    let wait = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while again.seen.lock().unwrap().is_empty()
            || checkpoint.load().await.unwrap() != newer_position
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the handled position was never saved once the stream went quiet"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        shutdown.cancel();
    };
    tokio::join!(run, wait);
    assert_eq!(*again.seen.lock().unwrap(), vec![newer]);
}

/// Holds its first batch back; records which batches finished and what the follower
/// reported handled.
struct FirstBatchSlow {
    batches: Mutex<u32>,
    finished: Mutex<Vec<String>>,
    handled: Mutex<Vec<String>>,
}

impl BatchHandler for FirstBatchSlow {
    async fn handle(&self, batch: &[Event]) -> anyhow::Result<()> {
        let first = {
            let mut batches = self.batches.lock().unwrap();
            *batches += 1;
            *batches == 1
        };
        if first {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let last = batch.last().map(|e| e.event_id.clone()).unwrap_or_default();
        self.finished.lock().unwrap().push(last);
        Ok(())
    }

    fn on_handled(&self, last: &Event, _events: usize) {
        self.handled.lock().unwrap().push(last.event_id.clone());
    }
}

async fn batches_handled_at_once_are_saved_in_feed_order(engine: Engine) {
    let (_database, server) = feed_server(engine).await;
    let consumer_db = TestDb::create(engine).await;
    let consumer = consumer_db.connect_platform().await;
    let mut expected = Vec::new();
    for i in 0..12 {
        expected.push(append_one(&server.db, "acme", "t", &i.to_string()).await);
    }
    let all = take(
        &mut open(
            &mut client(&server, &agilepm_testkit::operator_token()),
            after(""),
        )
        .await,
        12,
    )
    .await;
    let checkpoint = DbCheckpoint::new(consumer.clone(), "pipelined");
    let handler = FirstBatchSlow {
        batches: Mutex::new(0),
        finished: Mutex::new(Vec::new()),
        handled: Mutex::new(Vec::new()),
    };
    let options = FollowOptions {
        max_batch: 3,
        in_flight: 4,
        checkpoint_every: Duration::ZERO,
        ..FollowOptions::default()
    };
    let shutdown = CancellationToken::new();
    let run = follow(
        client(&server, &agilepm_testkit::operator_token()),
        &checkpoint,
        &handler,
        &options,
        shutdown.clone(),
    );
    let check = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        // Later batches finish while the first is held back...
        wait_until(deadline, "no batch ran beside the first", || {
            handler.finished.lock().unwrap().len() >= 2
        })
        .await;
        // ...but nothing counts as handled, and nothing is saved, before the first.
        assert!(handler.handled.lock().unwrap().is_empty());
        assert_eq!(checkpoint.load().await.unwrap(), "");
        wait_until(deadline, "follower did not catch up", || {
            handler.handled.lock().unwrap().last() == expected.last()
        })
        .await;
        // Stop once the last batch's position has been saved (saves run beside the
        // batches, so one may still be under way), or at the deadline; the assertion
        // below tells which.
        while checkpoint.load().await.unwrap() != all[11].position
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shutdown.cancel();
    };
    tokio::join!(run, check);
    let handled = handler.handled.lock().unwrap().clone();
    let finished = handler.finished.lock().unwrap().clone();
    // Reported in feed order, though finished out of it.
    let order = |id: &String| expected.iter().position(|e| e == id).unwrap();
    assert!(
        handled.windows(2).all(|w| order(&w[0]) < order(&w[1])),
        "{handled:?}"
    );
    assert_ne!(
        finished, handled,
        "the held-back batch should have finished last"
    );
    assert_eq!(checkpoint.load().await.unwrap(), all[11].position);
}

/// A checkpoint row whose first save waits at a gate until the test opens it (a slow
/// commit); records every position it saved, in order.
struct GatedCheckpoint {
    inner: DbCheckpoint,
    gate: tokio::sync::Semaphore,
    saved: Mutex<Vec<String>>,
}

impl CheckpointStore for GatedCheckpoint {
    async fn load(&self) -> anyhow::Result<String> {
        self.inner.load().await
    }

    async fn save(&self, position: &str) -> anyhow::Result<()> {
        // The first save takes the gate's only permit once the test adds it; later saves
        // find the gate closed for good and pass.
        if self.saved.lock().unwrap().is_empty() {
            self.gate.acquire().await?.forget();
        }
        self.inner.save(position).await?;
        self.saved.lock().unwrap().push(position.to_owned());
        Ok(())
    }
}

async fn a_slow_checkpoint_save_holds_no_batch_back(engine: Engine) {
    let (_database, server) = feed_server(engine).await;
    let consumer_db = TestDb::create(engine).await;
    let consumer = consumer_db.connect_platform().await;
    let first = append_one(&server.db, "acme", "t", "first").await;
    let checkpoint = GatedCheckpoint {
        inner: DbCheckpoint::new(consumer.clone(), "gated"),
        gate: tokio::sync::Semaphore::new(0),
        saved: Mutex::new(Vec::new()),
    };
    let handler = Recorder::failing_first(0);
    let options = FollowOptions {
        max_batch: 4,
        checkpoint_every: Duration::ZERO,
        ..FollowOptions::default()
    };
    let shutdown = CancellationToken::new();
    let run = follow(
        client(&server, &agilepm_testkit::operator_token()),
        &checkpoint,
        &handler,
        &options,
        shutdown.clone(),
    );
    let mut later = Vec::new();
    let check = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        wait_until(deadline, "the first event was not handled", || {
            handler.seen.lock().unwrap().len() == 1
        })
        .await;
        // The first event's save is now stuck at the gate. Events committed meanwhile
        // are still handled.
        for i in 0..10 {
            later.push(append_one(&server.db, "acme", "t", &i.to_string()).await);
        }
        wait_until(deadline, "events waited for the checkpoint save", || {
            handler.seen.lock().unwrap().len() == 11
        })
        .await;
        assert!(checkpoint.saved.lock().unwrap().is_empty());
        assert_eq!(checkpoint.load().await.unwrap(), "");
        // Once the save finishes, the newest handled position follows it.
        checkpoint.gate.add_permits(1);
        let all = take(
            &mut open(
                &mut client(&server, &agilepm_testkit::operator_token()),
                after(""),
            )
            .await,
            11,
        )
        .await;
        while checkpoint.load().await.unwrap() != all[10].position {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the newest position was never saved"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shutdown.cancel();
        all
    };
    let ((), all) = tokio::join!(run, check);
    let mut expected = vec![first];
    expected.extend(later);
    assert_eq!(*handler.seen.lock().unwrap(), expected);
    // One save at a time, in feed order, starting with the first event's.
    let saved = checkpoint.saved.lock().unwrap().clone();
    assert_eq!(saved[0], all[0].position);
    let order = |p: &String| all.iter().position(|e| &e.position == p).unwrap();
    assert!(
        saved.windows(2).all(|w| order(&w[0]) < order(&w[1])),
        "{saved:?}"
    );
}
