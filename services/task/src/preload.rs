//! Synthetic data for benchmarks: `count` tasks (12 per backlog item, 12 hours each, one
//! log entry each, dated yesterday so today's estimates are current, with their item
//! totals) generated inside the database in three
//! statements, so a million tasks load in seconds. Ids are deterministic:
//! task `n` is `00000000-0000-4000-8000-<n, 12 digits>` of tenant `bench`.

use agilepm_platform::domain::time::today_utc;
use agilepm_platform::storage::db::{Db, Engine};

const SQLITE: [&str; 3] = [
    "WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n < $1 - 1) \
     INSERT INTO tasks (id, tenant_id, backlog_item_id, request_id, name, description, volunteer_id, \
       status, hours_remaining, latest_log_day, version, create_time_us, update_time_us, removed_time_us) \
     SELECT printf('00000000-0000-4000-8000-%012d', n), 'bench', printf('10000000-0000-4000-8000-%012d', n / 12), \
       'r' || n, 'task ' || n, '', '', 1, 12, $2, 1, n, n, NULL FROM s",
    "WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n < $1 - 1) \
     INSERT INTO estimation_log (task_id, day, backlog_item_id, hours_remaining, record_time_us) \
     SELECT printf('00000000-0000-4000-8000-%012d', n), $2, printf('10000000-0000-4000-8000-%012d', n / 12), 12, n FROM s",
    "WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n < ($1 + 11) / 12 - 1) \
     INSERT INTO item_totals (backlog_item_id, tenant_id, hours_remaining, task_count, revision) \
     SELECT printf('10000000-0000-4000-8000-%012d', n), 'bench', 144, 12, 12 FROM s",
];

const POSTGRES: [&str; 3] = [
    "INSERT INTO tasks (id, tenant_id, backlog_item_id, request_id, name, description, volunteer_id, \
       status, hours_remaining, latest_log_day, version, create_time_us, update_time_us, removed_time_us) \
     SELECT '00000000-0000-4000-8000-' || lpad(n::text, 12, '0'), 'bench', '10000000-0000-4000-8000-' || lpad((n / 12)::text, 12, '0'), \
       'r' || n, 'task ' || n, '', '', 1, 12, $2, 1, n, n, NULL FROM generate_series(0, $1 - 1) n",
    "INSERT INTO estimation_log (task_id, day, backlog_item_id, hours_remaining, record_time_us) \
     SELECT '00000000-0000-4000-8000-' || lpad(n::text, 12, '0'), $2, '10000000-0000-4000-8000-' || lpad((n / 12)::text, 12, '0'), 12, n \
     FROM generate_series(0, $1 - 1) n",
    "INSERT INTO item_totals (backlog_item_id, tenant_id, hours_remaining, task_count, revision) \
     SELECT '10000000-0000-4000-8000-' || lpad(n::text, 12, '0'), 'bench', 144, 12, 12 FROM generate_series(0, ($1 + 11) / 12 - 1) n",
];

const AGE_SQLITE: &str = "WITH RECURSIVE d(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM d WHERE k < $3) \
     INSERT INTO estimation_log (task_id, day, backlog_item_id, hours_remaining, record_time_us) \
     SELECT t.id, date($4, '-' || k || ' days'), t.backlog_item_id, 12, 0 FROM tasks t, d \
     WHERE t.id >= $1 AND t.id < $2";

const AGE_POSTGRES: &str = "INSERT INTO estimation_log (task_id, day, backlog_item_id, hours_remaining, record_time_us) \
     SELECT t.id, to_char(CAST($4 AS date) - k, 'YYYY-MM-DD'), t.backlog_item_id, 12, 0 \
     FROM tasks t, generate_series(1, CAST($3 AS INTEGER)) k WHERE t.id >= $1 AND t.id < $2";

/// Gives synthetic tasks `from..to` `days` more log entries, for the days before their
/// one preloaded entry: tasks estimated for `days + 1` days.
pub async fn age_logs(db: &Db, from: i64, to: i64, days: i64) -> Result<(), sqlx::Error> {
    let sql = match db.engine() {
        Engine::Sqlite => AGE_SQLITE,
        Engine::Postgres => AGE_POSTGRES,
    };
    let yesterday = (today_utc() - chrono::Days::new(1)).to_string();
    sqlx::query(sql)
        .bind(task_id(from))
        .bind(task_id(to))
        .bind(days)
        .bind(yesterday)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// The id of synthetic task `n`.
pub fn task_id(n: i64) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// Inserts `count` synthetic tasks into an empty, migrated task database.
pub async fn preload(db: &Db, count: i64) -> Result<(), sqlx::Error> {
    let statements = match db.engine() {
        Engine::Sqlite => SQLITE,
        Engine::Postgres => POSTGRES,
    };
    let yesterday = (today_utc() - chrono::Days::new(1)).to_string();
    for sql in statements {
        let query = sqlx::query(sql).bind(count);
        let query = if sql.contains("$2") {
            query.bind(&yesterday)
        } else {
            query
        };
        query.execute(db.pool()).await?;
    }
    if db.engine() == Engine::Postgres {
        sqlx::query("ANALYZE").execute(db.pool()).await?;
    }
    Ok(())
}
