//! The foundation: every service starts, migrates its own database, answers health and
//! reflection, and refuses malformed requests with INVALID_ARGUMENT.

use agilepm_platform::domain::error::AppError;
use agilepm_platform::storage::db::Db;
use agilepm_platform::storage::guarded_writes::{self, GuardedWrite};
use agilepm_platform::storage::outbox::{NewEvent, Subject};
use agilepm_platform::storage::statement::Statement;
use agilepm_platform::wire::config::ServiceName;
use agilepm_proto::events::v1::SubscribeRequest;
use agilepm_proto::events::v1::event_feed_service_client::EventFeedServiceClient;
use agilepm_testkit::{Engine, TestDb, TestSystem, engine_tests};
use futures::StreamExt as _;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

engine_tests!(
    every_service_serves_health_and_reflection,
    migrations_create_the_platform_tables,
    a_guarded_write_that_falls_short_writes_nothing,
    malformed_requests_are_invalid_argument,
    idempotency_keys_are_remembered_for_a_day_then_forgotten
);

async fn every_service_serves_health_and_reflection(engine: Engine) {
    let system = TestSystem::start(engine, &ServiceName::ALL).await;
    for service in ServiceName::ALL {
        let channel = system.channel(service, "acme");
        let health = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap();
        assert_eq!(
            health.get_ref().status,
            ServingStatus::Serving as i32,
            "{service}"
        );

        let listed = list_services(channel).await;
        assert!(
            listed.contains(&"grpc.health.v1.Health".to_owned()),
            "{service}: {listed:?}"
        );
        assert!(
            listed.contains(&"grpc.reflection.v1.ServerReflection".to_owned()),
            "{service}: {listed:?}"
        );
        let own = match service {
            ServiceName::BacklogItem => "agilepm.backlog.v1.BacklogItemService",
            ServiceName::Task => "agilepm.task.v1.TaskService",
            ServiceName::Planning => "agilepm.planning.v1.ProductService",
            ServiceName::Coordinator => "agilepm.coordinator.v1.CoordinatorService",
            ServiceName::Notifier => "agilepm.notifier.v1.NotifierService",
        };
        assert!(listed.contains(&own.to_owned()), "{service}: {listed:?}");
        // Each port advertises only what it serves.
        if service != ServiceName::Task {
            assert!(
                !listed.contains(&"agilepm.task.v1.TaskService".to_owned()),
                "{service}: {listed:?}"
            );
        }
    }
    system.stop().await;
}

async fn list_services(channel: agilepm_platform::wire::client::PeerChannel) -> Vec<String> {
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection response {other:?}"),
    }
}

async fn migrations_create_the_platform_tables(engine: Engine) {
    let database = TestDb::create(engine).await;
    let db = database.connect_platform().await;
    let applied: i64 =
        sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM _sqlx_migrations WHERE success")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert!(applied >= 1);
    let feed_ids: i64 = sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM feed_identity")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(feed_ids, 1);
    db.close().await;
    // Opening again is a no-op: migrations are recorded, not re-applied.
    let again = database.connect_platform().await;
    let outbox_rows: i64 = sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM outbox")
        .fetch_one(again.pool())
        .await
        .unwrap();
    assert_eq!(outbox_rows, 0);
    again.close().await;
}

/// A checkpoint row written with a guard on its current position (or, with `None`,
/// inserted), as a batch writer would write a row it read.
fn checkpoint_write<'a>(
    consumer: &'a str,
    read: Option<&'a str>,
    position: &'a str,
) -> GuardedWrite<'a> {
    GuardedWrite {
        build: Box::new(move |statement: &mut Statement| match read {
            Some(read) => {
                statement.sql("UPDATE feed_checkpoints SET position = ");
                statement.placeholder().bind(position.to_owned());
                statement.sql(" WHERE consumer = ");
                statement.placeholder().bind(consumer.to_owned());
                statement.sql(" AND position = ");
                statement.placeholder().bind(read.to_owned());
            }
            None => {
                statement
                    .sql(
                        "INSERT INTO feed_checkpoints (consumer, position, update_time_us) VALUES ",
                    )
                    .value_rows(1, 3)
                    .bind(consumer.to_owned())
                    .bind(position.to_owned())
                    .bind(0i64);
            }
        }),
        rows: Some(1),
    }
}

async fn a_guarded_write_that_falls_short_writes_nothing(engine: Engine) {
    let database = TestDb::create(engine).await;
    let db = database.connect_platform().await;
    let subject = Subject {
        aggregate_type: "Checkpoint",
        aggregate_id: "a",
        tenant_id: "t",
    };
    let event = |n: i64| NewEvent {
        subject,
        event_type: "test.Written",
        payload: n.to_be_bytes().to_vec(),
        actor: String::new(),
        trace_parent: String::new(),
    };
    let state = |db: Db| async move {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT consumer, position FROM feed_checkpoints ORDER BY consumer")
                .fetch_all(db.pool())
                .await
                .unwrap();
        let events: i64 = sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM outbox")
            .fetch_one(db.pool())
            .await
            .unwrap();
        (rows, events)
    };

    guarded_writes::apply(&db, &[checkpoint_write("a", None, "p1")], &[event(1)])
        .await
        .unwrap();
    assert_eq!(
        state(db.clone()).await,
        (vec![("a".into(), "p1".into())], 1)
    );

    // "a" is no longer at "p0": the whole write, its insert of "b" and its event stay out.
    let stale = [
        checkpoint_write("b", None, "p1"),
        checkpoint_write("a", Some("p0"), "p2"),
    ];
    let outcome = guarded_writes::apply(&db, &stale, &[event(2), event(3)]).await;
    assert!(
        matches!(outcome, Err(AppError::Aborted(_))),
        "a failed guard is ABORTED: {outcome:?}"
    );
    assert_eq!(
        state(db.clone()).await,
        (vec![("a".into(), "p1".into())], 1)
    );

    // The same write from what is stored now stands, all of it.
    let fresh = [
        checkpoint_write("b", None, "p1"),
        checkpoint_write("a", Some("p1"), "p2"),
    ];
    guarded_writes::apply(&db, &fresh, &[event(2), event(3)])
        .await
        .unwrap();
    assert_eq!(
        state(db.clone()).await,
        (
            vec![("a".into(), "p2".into()), ("b".into(), "p1".into())],
            3
        )
    );
    db.close().await;
}

async fn malformed_requests_are_invalid_argument(engine: Engine) {
    let system = TestSystem::start(engine, &[ServiceName::Task]).await;
    let mut feed = EventFeedServiceClient::new(system.channel(ServiceName::Task, "acme"));
    for position in ["garbage", "abc.1", "zzzz.1.2"] {
        let error = feed
            .subscribe(SubscribeRequest {
                after_position: position.into(),
                ..Default::default()
            })
            .await
            .expect_err("malformed position must be refused");
        assert_eq!(error.code(), Code::InvalidArgument, "{position}: {error:?}");
        assert!(error.message().starts_with("after_position"), "{error:?}");
    }
    let error = feed
        .subscribe(SubscribeRequest {
            heartbeat_interval_ms: -5,
            ..Default::default()
        })
        .await
        .expect_err("negative heartbeat interval must be refused");
    assert_eq!(error.code(), Code::InvalidArgument);
    system.stop().await;
}

/// A service binary says which version and revision it is, and exits.
#[test]
fn a_service_binary_reports_its_version_and_revision() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_task-under-test"))
        .arg("--version")
        .output()
        .expect("run the task binary");
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8(output.stdout).unwrap();
    let expected = format!("agilepm-task {} (", env!("CARGO_PKG_VERSION"));
    assert!(printed.starts_with(&expected), "{printed:?}");
    let revision = printed
        .trim_end()
        .trim_start_matches(&expected)
        .trim_end_matches(')');
    assert!(
        revision == "unknown"
            || (revision.len() == 12 && revision.bytes().all(|b| b.is_ascii_hexdigit())),
        "revision {revision:?}"
    );
}

/// A key answers retries from its record while it lives; past its lifetime the sweep
/// forgets it (and only it), and the key is new again.
async fn idempotency_keys_are_remembered_for_a_day_then_forgotten(engine: Engine) {
    use agilepm_platform::storage::idempotency::{self, KEY_LIFETIME, Key};
    use agilepm_proto::planning::v1::{GetMemberRequest, GetMemberResponse, Member};
    let database = TestDb::create(engine).await;
    let db = database.connect_platform().await;
    let runs = std::sync::atomic::AtomicUsize::new(0);
    let run = |request_id: &str| {
        let request = GetMemberRequest {
            id: request_id.to_owned(),
        };
        let key = Key::new("acme", request_id, "test.Service/Method", &request);
        let (db, runs) = (&db, &runs);
        async move {
            idempotency::once(db, &key, || async {
                let run = runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                Ok(GetMemberResponse {
                    member: Some(Member {
                        id: format!("run {run}"),
                        ..Default::default()
                    }),
                })
            })
            .await
            .unwrap()
            .member
            .unwrap()
            .id
        }
    };
    for key in ["old-1", "old-2", "young"] {
        run(key).await;
    }
    assert_eq!(
        run("young").await,
        "run 3",
        "a retry is answered from the record"
    );
    let day_us = i64::try_from(KEY_LIFETIME.as_micros()).unwrap();
    let now = agilepm_platform::domain::time::now_micros();
    sqlx::query("UPDATE idempotency_keys SET create_time_us = $1 WHERE request_id LIKE 'old-%'")
        .bind(now - day_us - 1_000_000)
        .execute(db.pool())
        .await
        .unwrap();
    let forgotten = idempotency::forget_older_than(&db, now - day_us)
        .await
        .unwrap();
    assert_eq!(forgotten, 2);
    assert_eq!(
        run("young").await,
        "run 3",
        "a key within its day is still remembered"
    );
    assert_eq!(run("old-1").await, "run 4", "a forgotten key is new again");
}

/// A service that starts cleanly logs no ERROR line: an error at start that is not one
/// teaches operators to ignore errors (and would reach Sentry). Each service runs as a
/// process of its own, as deployed without a metrics address, its peers not yet up.
#[tokio::test]
async fn services_start_without_an_error_line() {
    use crate::processes::{free_address, wait_serving};
    agilepm_testkit::init();
    for (binary, name) in [
        (
            env!("CARGO_BIN_EXE_backlog-item-under-test"),
            "backlog-item",
        ),
        (env!("CARGO_BIN_EXE_task-under-test"), "task"),
        (env!("CARGO_BIN_EXE_planning-under-test"), "planning"),
        (env!("CARGO_BIN_EXE_coordinator-under-test"), "coordinator"),
        (env!("CARGO_BIN_EXE_notifier-under-test"), "notifier"),
    ] {
        let database = TestDb::create(Engine::Sqlite).await;
        let address = free_address();
        let unreachable = format!("http://{}", free_address());
        let mut process = tokio::process::Command::new(binary)
            .env("AGILEPM_LISTEN", address.to_string())
            .env("AGILEPM_DATABASE_URL", database.url())
            .env("AGILEPM_AUTH_SECRET", agilepm_testkit::test_secret())
            .env("AGILEPM_BACKLOG_ITEM_ENDPOINT", &unreachable)
            .env("AGILEPM_TASK_ENDPOINT", &unreachable)
            .env("AGILEPM_PLANNING_ENDPOINT", &unreachable)
            .env("AGILEPM_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .env_remove("AGILEPM_METRICS_ADDRESS")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        wait_serving(address, name).await;
        process.start_kill().unwrap();
        let output = process.wait_with_output().await.unwrap();
        let logged = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let errors: Vec<&str> = logged
            .lines()
            .filter(|line| line.contains(r#""level":"ERROR""#))
            .collect();
        assert!(
            errors.is_empty(),
            "{name} logged at start:\n{}",
            errors.join("\n")
        );
    }
}
