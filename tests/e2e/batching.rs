//! Group commit is an optimisation, never a change of meaning: a batch of estimates gives
//! exactly the outcomes, the stored state and the events that the same estimates give
//! applied one by one, in the same order (proptest over random sequences: tasks,
//! back-dated and same-day estimates, hours reaching zero and leaving it, stale
//! `expected_version`s).

use agilepm_platform::db::{Db, Engine};
use agilepm_platform::group_commit::BatchWrite as _;
use agilepm_proto::task::v1::TaskStatus;
use agilepm_task::estimates::{Estimate, EstimateBatch, Estimated};
use agilepm_task::store::{self, TaskRow};
use agilepm_testkit::TestDb;
use chrono::NaiveDate;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sqlx::Row;

const TENANT: &str = "acme";
const ITEM: &str = "0190c0de-0000-7000-8000-000000000001";
const TASKS: [&str; 3] = [
    "0190c0de-0000-7000-8000-00000000000a",
    "0190c0de-0000-7000-8000-00000000000b",
    "0190c0de-0000-7000-8000-00000000000c",
];
const HOURS: i32 = 5;

fn first_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 2).unwrap()
}

/// Empties `db`, then defines the three tasks of [`ITEM`] on [`first_day`] with [`HOURS`]
/// each, as `DefineTask` leaves them. (One database per side for all cases: creating
/// PostgreSQL databases per case would take most of the test's time.)
async fn define(db: &Db) {
    for table in ["tasks", "estimation_log", "item_totals", "outbox"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
            .execute(db.pool())
            .await
            .unwrap();
    }
    for (n, id) in TASKS.iter().enumerate() {
        let task = TaskRow {
            id: (*id).to_owned(),
            tenant_id: TENANT.into(),
            backlog_item_id: ITEM.into(),
            name: format!("task {n}"),
            description: String::new(),
            volunteer_id: String::new(),
            status: TaskStatus::NotStarted,
            hours: HOURS,
            latest_log_day: Some(first_day()),
            version: 1,
            create_time_us: 1,
            update_time_us: 1,
            removed_time_us: None,
        };
        let mut uow = db.begin().await.unwrap();
        store::insert(&mut uow, &task, &format!("define-{n}"))
            .await
            .unwrap();
        store::log_estimate(&mut uow, &task, first_day(), HOURS, 1)
            .await
            .unwrap();
        store::add_to_totals(&mut uow, TENANT, ITEM, i64::from(HOURS), 1)
            .await
            .unwrap();
        uow.commit().await.unwrap();
    }
}

/// One estimate: which task, how many days after the first, how many hours, and the
/// version the caller expects, if any.
fn estimates() -> impl Strategy<Value = Vec<(usize, u32, i32, Option<i64>)>> {
    prop::collection::vec(
        (
            0..TASKS.len(),
            0u32..4,
            0i32..4,
            prop::option::weighted(0.2, 1i64..5),
        ),
        1..24,
    )
}

fn estimate((task, day, hours, expected_version): (usize, u32, i32, Option<i64>)) -> Estimate {
    Estimate {
        tenant: TENANT.into(),
        task_id: TASKS[task].into(),
        day: first_day() + chrono::Days::new(u64::from(day)),
        hours,
        expected_version,
        actor: "tester".into(),
    }
}

/// An outcome without its clock readings (each run records its own times).
fn outcome(result: &agilepm_platform::error::AppResult<Estimated>) -> String {
    match result {
        Ok(estimated) => {
            let mut task = estimated.task.clone();
            task.create_time = None;
            task.update_time = None;
            for entry in &mut task.estimation_log {
                entry.record_time = None;
            }
            format!("{task:?} {:?}", estimated.totals)
        }
        Err(error) => format!("{:?}", error.code()),
    }
}

/// What the database holds: tasks, their logs, the item's totals and the events, in order.
async fn stored(db: &Db) -> Vec<String> {
    let mut state = Vec::new();
    for (sql, columns) in [
        (
            "SELECT id, status, hours_remaining, latest_log_day, version FROM tasks ORDER BY id",
            &[
                "id",
                "status",
                "hours_remaining",
                "latest_log_day",
                "version",
            ][..],
        ),
        (
            "SELECT task_id, day, hours_remaining, estimated_by FROM estimation_log \
             ORDER BY task_id, day",
            &["task_id", "day", "hours_remaining", "estimated_by"][..],
        ),
        (
            "SELECT backlog_item_id, hours_remaining, task_count, revision FROM item_totals",
            &[
                "backlog_item_id",
                "hours_remaining",
                "task_count",
                "revision",
            ][..],
        ),
    ] {
        for row in sqlx::query(sql).fetch_all(db.pool()).await.unwrap() {
            let values: Vec<String> = columns
                .iter()
                .map(|column| {
                    row.try_get::<String, _>(*column)
                        .or_else(|_| row.try_get::<i64, _>(*column).map(|v| v.to_string()))
                        .unwrap_or_else(|_| "NULL".into())
                })
                .collect();
            state.push(values.join("|"));
        }
    }
    let order = match db.engine() {
        Engine::Sqlite => {
            "SELECT event_type, aggregate_id, payload, actor FROM outbox ORDER BY position"
        }
        Engine::Postgres => {
            "SELECT event_type, aggregate_id, payload, actor FROM outbox ORDER BY txid, seq"
        }
    };
    let events = sqlx::query(order).fetch_all(db.pool()).await.unwrap();
    for event in events {
        state.push(format!(
            "{} {} {:?} {}",
            event.get::<String, _>("event_type"),
            event.get::<String, _>("aggregate_id"),
            event.get::<Vec<u8>, _>("payload"),
            event.get::<String, _>("actor"),
        ));
    }
    state
}

async fn batch_equals_one_by_one(
    batched: &Db,
    single: &Db,
    sequence: Vec<(usize, u32, i32, Option<i64>)>,
) {
    let estimates: Vec<Estimate> = sequence.into_iter().map(estimate).collect();
    define(batched).await;
    define(single).await;

    let together = EstimateBatch::new(batched.clone())
        .apply(&estimates)
        .await
        .expect("the batch applies");
    let writer = EstimateBatch::new(single.clone());
    let mut apart = Vec::new();
    for estimate in &estimates {
        let mut one = writer
            .apply(std::slice::from_ref(estimate))
            .await
            .expect("the estimate applies");
        apart.push(one.remove(0));
    }

    let outcomes = |results: &[agilepm_platform::error::AppResult<Estimated>]| {
        results.iter().map(outcome).collect::<Vec<_>>()
    };
    assert_eq!(
        outcomes(&together),
        outcomes(&apart),
        "outcomes, request by request"
    );
    assert_eq!(
        stored(batched).await,
        stored(single).await,
        "what the database holds"
    );
}

agilepm_testkit::engine_tests!(a_batch_of_estimates_is_the_same_estimates_one_by_one);

async fn a_batch_of_estimates_is_the_same_estimates_one_by_one(engine: Engine) {
    let (batched_database, single_database) =
        (TestDb::create(engine).await, TestDb::create(engine).await);
    let batched = batched_database
        .connect(agilepm_task::SPEC.migrations)
        .await;
    let single = single_database.connect(agilepm_task::SPEC.migrations).await;
    // 32 random sequences per engine; a failure is shrunk to a minimal sequence and
    // printed. The runner is synchronous: each case runs on a runtime of its own thread.
    let (batched_db, single_db) = (batched.clone(), single.clone());
    tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut runner = TestRunner::new(Config {
            cases: 32,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&estimates(), |sequence| {
                runtime.block_on(batch_equals_one_by_one(&batched_db, &single_db, sequence));
                Ok(())
            })
            .unwrap();
    })
    .await
    .unwrap();
    batched.close().await;
    single.close().await;
}
