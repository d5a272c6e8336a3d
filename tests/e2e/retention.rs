//! Outbox retention: old events go once every registered consumer has them, the hard cap
//! overrides the consumers (and names them), and a subscription from before what is kept
//! is refused with OUT_OF_RANGE rather than handed a feed with a hole in it. Retention
//! runs are called with the clock they should see, so nothing waits a week.

use std::time::Duration;

use agilepm_platform::events::feed::retention::{self, RetentionOptions};
use agilepm_platform::events::follower::{BatchHandler, DbCheckpoint, FollowOptions, follow};
use agilepm_platform::wire::auth::Role;
use agilepm_platform::wire::client::PeerChannel;
use agilepm_platform::wire::config::ServiceName;
use agilepm_proto::events::v1::event_feed_service_client::EventFeedServiceClient;
use agilepm_proto::events::v1::{
    AcknowledgeFeedPositionRequest, Event, ForgetFeedConsumerRequest, ListFeedConsumersRequest,
};
use agilepm_testkit::{Engine, engine_tests};
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::feed::{after, append_one, client, feed_server, open, take};

engine_tests!(
    events_go_only_once_old_and_handled_by_every_consumer,
    the_hard_cap_overrides_consumers_and_names_them,
    acknowledgements_are_checked_and_for_services_only,
    an_operator_lists_and_forgets_a_consumer_and_retention_lets_go,
    a_follower_registers_its_position_and_is_told_of_a_hole,
);

const DAY_US: i64 = 24 * 3600 * 1_000_000;

fn options(max_events: u64) -> RetentionOptions {
    RetentionOptions {
        keep_for: Duration::from_secs(7 * 24 * 3600),
        max_events,
        every: Duration::from_secs(60),
    }
}

/// A feed with ten events, a client of it as the coordinator, and the events as served.
async fn ten_events(
    engine: Engine,
) -> (
    agilepm_testkit::TestDb,
    agilepm_testkit::FeedServer,
    EventFeedServiceClient<PeerChannel>,
    Vec<Event>,
) {
    let (database, server) = feed_server(engine).await;
    let coordinator = agilepm_testkit::service_token(ServiceName::Coordinator);
    for n in 0..10 {
        append_one(&server.db, "acme", "t1", &format!("v{n}")).await;
    }
    let mut feed = client(&server, &coordinator);
    let events = take(&mut open(&mut feed, after("")).await, 10).await;
    (database, server, feed, events)
}

fn now_us() -> i64 {
    agilepm_platform::domain::time::now_micros()
}

/// Runs retention at `now` until `expected` events are deleted (or 10 s pass); the number
/// deleted. On PostgreSQL an event is pruned once it is settled below the cluster-wide
/// horizon, which another test's open write transaction can hold back for a moment: a run
/// that finds nothing settled deletes nothing and the next one does, as the periodic job
/// would. No run may overrun the consumer.
async fn prune_until(db: &agilepm_platform::storage::db::Db, expected: u64, now: i64) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut deleted = 0;
    loop {
        let pruned = retention::prune(db, &options(1000), now).await.unwrap();
        assert!(pruned.overrun.is_empty(), "{pruned:?}");
        deleted += pruned.deleted;
        if deleted >= expected || tokio::time::Instant::now() >= deadline {
            return deleted;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn events_go_only_once_old_and_handled_by_every_consumer(engine: Engine) {
    let (_database, server, mut feed, events) = ten_events(engine).await;

    // Young events stay whatever the consumers.
    let pruned = retention::prune(&server.db, &options(1000), now_us())
        .await
        .unwrap();
    assert_eq!(pruned.deleted, 0);

    // A week on, a consumer that has handled the first four holds the rest.
    feed.acknowledge_feed_position(AcknowledgeFeedPositionRequest {
        consumer: "coordinator".into(),
        position: events[3].position.clone(),
    })
    .await
    .unwrap();
    let a_week_on = now_us() + 8 * DAY_US;
    assert_eq!(prune_until(&server.db, 4, a_week_on).await, 4);

    // From the beginning (or from before what is kept): OUT_OF_RANGE, naming where to
    // go on from.
    for position in ["", events[1].position.as_str()] {
        let refused = async {
            let mut stream: tonic::codec::Streaming<_> =
                feed.subscribe(after(position)).await?.into_inner();
            use futures::StreamExt as _;
            match stream.next().await {
                Some(Err(status)) => Err::<(), tonic::Status>(status),
                other => panic!("the subscription from {position:?} went on: {other:?}"),
            }
        }
        .await
        .unwrap_err();
        assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
        assert!(
            refused.message().contains(&events[3].position),
            "{}",
            refused.message()
        );
    }
    // From the consumer's position: exactly what follows.
    let rest = take(&mut open(&mut feed, after(&events[3].position)).await, 6).await;
    let ids = |events: &[agilepm_proto::events::v1::Event]| {
        events
            .iter()
            .map(|e| e.event_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&rest), ids(&events[4..]));

    // Once the consumer has them all, they go too.
    feed.acknowledge_feed_position(AcknowledgeFeedPositionRequest {
        consumer: "coordinator".into(),
        position: events[9].position.clone(),
    })
    .await
    .unwrap();
    assert_eq!(prune_until(&server.db, 6, a_week_on).await, 6);
    let kept: i64 = sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM outbox")
        .fetch_one(server.db.pool())
        .await
        .unwrap();
    assert_eq!(kept, 0);
    // The feed goes on from its last position, with the next event.
    let mut tail = open(&mut feed, after(&events[9].position)).await;
    append_one(&server.db, "acme", "t1", "later").await;
    assert!(take(&mut tail, 1).await[0].payload.is_some());
}

async fn the_hard_cap_overrides_consumers_and_names_them(engine: Engine) {
    let (_database, server, mut feed, events) = ten_events(engine).await;
    feed.acknowledge_feed_position(AcknowledgeFeedPositionRequest {
        consumer: "slow-consumer".into(),
        position: events[1].position.clone(),
    })
    .await
    .unwrap();
    // Young events, a consumer behind: only the cap (3 events) makes room.
    let pruned = retention::prune(&server.db, &options(3), now_us())
        .await
        .unwrap();
    assert_eq!(pruned.deleted, 7, "{pruned:?}");
    assert_eq!(pruned.overrun.len(), 1);
    assert_eq!(pruned.overrun[0].0, "slow-consumer");
    let rest = take(&mut open(&mut feed, after(&events[6].position)).await, 3).await;
    assert_eq!(rest[0].event_id, events[7].event_id);
    let refused = feed.subscribe(after(&events[1].position)).await;
    let refused = match refused {
        Err(status) => status,
        Ok(response) => {
            use futures::StreamExt as _;
            response.into_inner().next().await.unwrap().unwrap_err()
        }
    };
    assert_eq!(refused.code(), Code::OutOfRange);
}

async fn acknowledgements_are_checked_and_for_services_only(engine: Engine) {
    let (_database, server) = feed_server(engine).await;
    append_one(&server.db, "acme", "t1", "v").await;
    let coordinator = agilepm_testkit::service_token(ServiceName::Coordinator);
    let mut feed = client(&server, &coordinator);
    let position = take(&mut open(&mut feed, after("")).await, 1).await[0]
        .position
        .clone();
    let acknowledge = |consumer: &str, position: &str| AcknowledgeFeedPositionRequest {
        consumer: consumer.into(),
        position: position.into(),
    };
    for (consumer, at, field) in [
        ("", position.as_str(), "consumer"),
        ("Coordinator!", position.as_str(), "consumer"),
        (&"c".repeat(65), position.as_str(), "consumer"),
        ("coordinator", "nonsense", "position"),
    ] {
        let refused = feed
            .acknowledge_feed_position(acknowledge(consumer, at))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{consumer}");
        assert!(refused.message().contains(field), "{}", refused.message());
    }
    // A tenant cannot hold the feed's retention.
    let member = agilepm_testkit::person_token("m", "acme", &[Role::TeamMember]);
    let mut tenant = client(&server, &member);
    let refused = tenant
        .acknowledge_feed_position(acknowledge("mine", &position))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    // At most 32 consumers.
    for n in 0..retention::MAX_CONSUMERS {
        feed.acknowledge_feed_position(acknowledge(&format!("c{n}"), &position))
            .await
            .unwrap();
    }
    let refused = feed
        .acknowledge_feed_position(acknowledge("one-too-many", &position))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    // A known one still moves.
    feed.acknowledge_feed_position(acknowledge("c0", &position))
        .await
        .unwrap();
}

/// What the deploy README solved with SQL: an operator lists the consumers holding the
/// feed's retention and forgets a decommissioned one, after which the events it held go.
async fn an_operator_lists_and_forgets_a_consumer_and_retention_lets_go(engine: Engine) {
    let (_database, server, mut feed, events) = ten_events(engine).await;
    let acknowledge = |consumer: &str, position: &str| AcknowledgeFeedPositionRequest {
        consumer: consumer.into(),
        position: position.into(),
    };
    feed.acknowledge_feed_position(acknowledge("coordinator", &events[9].position))
        .await
        .unwrap();
    feed.acknowledge_feed_position(acknowledge("old-consumer", &events[2].position))
        .await
        .unwrap();
    let mut operator = client(&server, &agilepm_testkit::operator_token());
    let listed = operator
        .list_feed_consumers(ListFeedConsumersRequest {})
        .await
        .unwrap()
        .into_inner()
        .consumers;
    let names: Vec<(&str, &str)> = listed
        .iter()
        .map(|c| (c.consumer.as_str(), c.position.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("old-consumer", events[2].position.as_str()),
            ("coordinator", events[9].position.as_str())
        ],
        "the one holding back the most first"
    );
    assert!(listed.iter().all(|c| c.update_time.is_some()));

    // A week on, the old consumer holds all but its first three.
    let a_week_on = now_us() + 8 * DAY_US;
    assert_eq!(prune_until(&server.db, 3, a_week_on).await, 3);

    // Neither a tenant nor a peer service may list or forget; a bad name is refused.
    let member = agilepm_testkit::person_token("m", "acme", &[Role::TeamMember]);
    for mut caller in [client(&server, &member), feed.clone()] {
        let refused = caller
            .list_feed_consumers(ListFeedConsumersRequest {})
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied);
        let refused = caller
            .forget_feed_consumer(ForgetFeedConsumerRequest {
                consumer: "old-consumer".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied);
    }
    let refused = operator
        .forget_feed_consumer(ForgetFeedConsumerRequest {
            consumer: "Old Consumer!".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("consumer"),
        "{}",
        refused.message()
    );

    // Forgotten: it is no longer listed, forgetting it again is NOT_FOUND, and the
    // events it held go.
    operator
        .forget_feed_consumer(ForgetFeedConsumerRequest {
            consumer: "old-consumer".into(),
        })
        .await
        .unwrap();
    let refused = operator
        .forget_feed_consumer(ForgetFeedConsumerRequest {
            consumer: "old-consumer".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    let left: Vec<String> = operator
        .list_feed_consumers(ListFeedConsumersRequest {})
        .await
        .unwrap()
        .into_inner()
        .consumers
        .into_iter()
        .map(|c| c.consumer)
        .collect();
    assert_eq!(left, ["coordinator"]);
    assert_eq!(prune_until(&server.db, 7, a_week_on).await, 7);
}

/// Records what a follower hands it: events, and the errors it is told about.
#[derive(Default)]
struct Watcher {
    events: std::sync::Mutex<usize>,
    errors: std::sync::Mutex<Vec<Code>>,
}

impl BatchHandler for Watcher {
    async fn handle(&self, batch: &[agilepm_proto::events::v1::Event]) -> anyhow::Result<()> {
        *self.events.lock().unwrap() += batch.len();
        Ok(())
    }

    fn on_error(&self, error: &anyhow::Error) {
        let code = error
            .downcast_ref::<tonic::Status>()
            .map_or(Code::Unknown, tonic::Status::code);
        self.errors.lock().unwrap().push(code);
    }
}

/// Waits (10 s at most) until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A follower given a consumer name registers the positions it saves; when the hard cap
/// deletes what it had not handled, it is told OUT_OF_RANGE and does not go on.
async fn a_follower_registers_its_position_and_is_told_of_a_hole(engine: Engine) {
    let (_database, server) = feed_server(engine).await;
    let coordinator = agilepm_testkit::service_token(ServiceName::Coordinator);
    for n in 0..5 {
        append_one(&server.db, "acme", "t1", &format!("v{n}")).await;
    }
    let checkpoint = DbCheckpoint::new(server.db.clone(), "test-follower");
    let following_options = FollowOptions {
        consumer: Some("test-follower".into()),
        acknowledge_every: Duration::ZERO,
        checkpoint_every: Duration::from_millis(10),
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        ..FollowOptions::default()
    };
    let watcher = std::sync::Arc::new(Watcher::default());
    let stop = CancellationToken::new();
    let following = {
        let (client, checkpoint, watcher, options, stop) = (
            client(&server, &coordinator),
            checkpoint.clone(),
            watcher.clone(),
            following_options.clone(),
            stop.clone(),
        );
        tokio::spawn(async move { follow(client, &checkpoint, &*watcher, &options, stop).await })
    };
    until("the follower handles the events", || {
        *watcher.events.lock().unwrap() == 5
    })
    .await;
    let registered = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT seq FROM feed_consumers WHERE consumer = 'test-follower'",
        )
        .fetch_optional(server.db.pool())
        .await
        .unwrap()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while registered().await.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "never registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    following.await.unwrap();

    for n in 0..5 {
        append_one(&server.db, "acme", "t1", &format!("w{n}")).await;
    }
    let pruned = retention::prune(&server.db, &options(2), now_us())
        .await
        .unwrap();
    assert_eq!(pruned.overrun.len(), 1, "{pruned:?}");

    let stop = CancellationToken::new();
    let following = {
        let (client, watcher, stop) =
            (client(&server, &coordinator), watcher.clone(), stop.clone());
        tokio::spawn(async move {
            follow(client, &checkpoint, &*watcher, &following_options, stop).await
        })
    };
    until("the follower is told OUT_OF_RANGE", || {
        watcher.errors.lock().unwrap().contains(&Code::OutOfRange)
    })
    .await;
    assert_eq!(
        *watcher.events.lock().unwrap(),
        5,
        "nothing past the hole was handled"
    );
    stop.cancel();
    following.await.unwrap();
}
