//! Persistence of tasks, their estimation logs and the per-item totals. Every function
//! that changes state takes the caller's [`UnitOfWork`], so the change, the totals and
//! the outbox event commit together or not at all.

use std::collections::HashMap;

use agilepm_platform::domain::error::{AppError, AppResult};
use agilepm_platform::domain::team_zone::TeamZone;
use agilepm_platform::storage::db::{Db, Engine, UnitOfWork};
use agilepm_platform::storage::guarded_writes::GuardedWrite;
use agilepm_platform::storage::statement::{Column, RowSet, Statement};
use agilepm_platform::storage::stored;
use chrono::NaiveDate;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::burndown::Entry;
use crate::domain::{LogEntry, Standing, Task, Totals};

/// The columns [`task_from`] reads, each behind `$table` (`""`, or `"t."` in a join).
macro_rules! task_columns {
    ($table:literal) => {
        concat!(
            $table,
            "id, ",
            $table,
            "tenant_id, ",
            $table,
            "backlog_item_id, ",
            $table,
            "name, ",
            $table,
            "description, ",
            $table,
            "volunteer_id, ",
            $table,
            "status, ",
            $table,
            "hours_remaining, ",
            $table,
            "latest_log_day, ",
            $table,
            "version, ",
            $table,
            "create_time_us, ",
            $table,
            "update_time_us, ",
            $table,
            "removed_time_us"
        )
    };
}

macro_rules! select_tasks {
    ($($rest:literal),*) => {
        concat!("SELECT ", task_columns!(""), " FROM tasks ", $($rest),*)
    };
}

fn task_from(row: &AnyRow) -> Result<Task, sqlx::Error> {
    let latest: Option<String> = row.try_get("latest_log_day")?;
    Ok(Task {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        backlog_item_id: row.try_get("backlog_item_id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        volunteer_id: row.try_get("volunteer_id")?,
        status: stored::enum_value(row.try_get("status")?, "tasks.status")?,
        hours: row.try_get::<i64, _>("hours_remaining")? as i32,
        latest_log_day: latest
            .map(|day| stored::date(&day, "tasks.latest_log_day"))
            .transpose()?,
        version: row.try_get("version")?,
        create_time_us: row.try_get("create_time_us")?,
        update_time_us: row.try_get("update_time_us")?,
        removed_time_us: row.try_get("removed_time_us")?,
    })
}

fn day_text(day: Option<NaiveDate>) -> Option<String> {
    day.map(|d| d.format("%Y-%m-%d").to_string())
}

/// The live (not removed) task `id` of `tenant`.
pub async fn get(conn: &mut AnyConnection, tenant: &str, id: &str) -> AppResult<Option<Task>> {
    Ok(sqlx::query(select_tasks!(
        "WHERE id = $1 AND tenant_id = $2 AND removed_time_us IS NULL"
    ))
    .bind(id)
    .bind(tenant)
    .fetch_optional(conn)
    .await?
    .map(|row| task_from(&row))
    .transpose()?)
}

/// The live task `id` of `tenant` with the hours logged for it on `day` (one query: an
/// estimate needs both, inside its write transaction).
pub async fn get_with_log(
    conn: &mut AnyConnection,
    tenant: &str,
    id: &str,
    day: NaiveDate,
) -> AppResult<Option<(Task, Option<i32>)>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        task_columns!("t."),
        ", l.hours_remaining AS logged_hours FROM tasks t \
         LEFT JOIN estimation_log l ON l.task_id = t.id AND l.day = $3 \
         WHERE t.id = $1 AND t.tenant_id = $2 AND t.removed_time_us IS NULL",
    ))
    .bind(id)
    .bind(tenant)
    .bind(day.format("%Y-%m-%d").to_string())
    .fetch_optional(conn)
    .await?;
    let found = row.map(|row| -> Result<_, sqlx::Error> {
        let logged: Option<i64> = row.try_get("logged_hours")?;
        Ok((task_from(&row)?, logged.map(|h| h as i32)))
    });
    Ok(found.transpose()?)
}

/// The task a create with `request_id` made, if any (removed or not).
pub async fn by_request_id(
    conn: &mut AnyConnection,
    tenant: &str,
    request_id: &str,
) -> AppResult<Option<Task>> {
    Ok(
        sqlx::query(select_tasks!("WHERE tenant_id = $1 AND request_id = $2"))
            .bind(tenant)
            .bind(request_id)
            .fetch_optional(conn)
            .await?
            .map(|row| task_from(&row))
            .transpose()?,
    )
}

/// A page of a backlog item's live tasks in creation order, after `after` (a
/// `(create_time_us, id)` key).
pub async fn list(
    db: &Db,
    tenant: &str,
    backlog_item_id: &str,
    after: Option<(i64, String)>,
    limit: u32,
) -> AppResult<Vec<Task>> {
    let (after_time, after_id) = after.unwrap_or((i64::MIN, String::new()));
    Ok(sqlx::query(select_tasks!(
        "WHERE backlog_item_id = $1 AND tenant_id = $2 AND removed_time_us IS NULL ",
        "AND (create_time_us > $3 OR (create_time_us = $3 AND id > $4)) ",
        "ORDER BY create_time_us, id LIMIT $5"
    ))
    .bind(backlog_item_id)
    .bind(tenant)
    .bind(after_time)
    .bind(after_id)
    .bind(i64::from(limit))
    .fetch_all(db.pool())
    .await?
    .iter()
    .map(task_from)
    .collect::<Result<_, _>>()?)
}

/// Inserts a new task.
pub async fn insert(uow: &mut UnitOfWork, task: &Task, request_id: &str) -> AppResult<()> {
    sqlx::query(
        "INSERT INTO tasks (id, tenant_id, backlog_item_id, request_id, name, description, \
         volunteer_id, status, hours_remaining, latest_log_day, version, create_time_us, \
         update_time_us, removed_time_us) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, NULL)",
    )
    .bind(&task.id)
    .bind(&task.tenant_id)
    .bind(&task.backlog_item_id)
    .bind(request_id)
    .bind(&task.name)
    .bind(&task.description)
    .bind(&task.volunteer_id)
    .bind(i64::from(task.status.number()))
    .bind(i64::from(task.hours))
    .bind(day_text(task.latest_log_day))
    .bind(task.version)
    .bind(task.create_time_us)
    .bind(task.update_time_us)
    .execute(uow.conn())
    .await?;
    Ok(())
}

/// Writes `task` if the stored version is still `read_version` (compare-and-set).
/// Returns false if another writer got there first.
pub async fn update(uow: &mut UnitOfWork, task: &Task, read_version: i64) -> AppResult<bool> {
    let result = sqlx::query(
        "UPDATE tasks SET name = $1, description = $2, volunteer_id = $3, status = $4, \
         hours_remaining = $5, latest_log_day = $6, version = $7, update_time_us = $8, \
         removed_time_us = $9 WHERE id = $10 AND version = $11",
    )
    .bind(&task.name)
    .bind(&task.description)
    .bind(&task.volunteer_id)
    .bind(i64::from(task.status.number()))
    .bind(i64::from(task.hours))
    .bind(day_text(task.latest_log_day))
    .bind(task.version)
    .bind(task.update_time_us)
    .bind(task.removed_time_us)
    .bind(&task.id)
    .bind(read_version)
    .execute(uow.conn())
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Records (or replaces) the estimate of `task` for `day`.
pub async fn log_estimate(
    uow: &mut UnitOfWork,
    task: &Task,
    day: NaiveDate,
    hours: i32,
    now_us: i64,
) -> AppResult<()> {
    let actor = agilepm_platform::wire::auth::acting_subject().unwrap_or_default();
    let write = LogWrite {
        task_id: &task.id,
        backlog_item_id: &task.backlog_item_id,
        day,
        hours,
        record_time_us: now_us,
        estimated_by: &actor,
    };
    log_write(&[write]).execute(uow).await?;
    Ok(())
}

/// The estimation logs of `task_ids`, oldest entry first.
pub async fn logs(db: &Db, task_ids: &[&str]) -> AppResult<HashMap<String, Vec<LogEntry>>> {
    let mut logs: HashMap<String, Vec<LogEntry>> = HashMap::new();
    if task_ids.is_empty() {
        return Ok(logs);
    }
    let mut statement = Statement::new(db.engine());
    statement
        .sql(
            "SELECT task_id, day, hours_remaining, record_time_us, estimated_by \
             FROM estimation_log WHERE ",
        )
        .any_of("task_id", task_ids)
        .sql(" ORDER BY task_id, day");
    let query = statement.query()?;
    for row in query.fetch_all(db.pool()).await? {
        let day: String = row.try_get("day")?;
        logs.entry(row.try_get("task_id")?)
            .or_default()
            .push(LogEntry {
                day: stored::date(&day, "estimation_log.day")?,
                hours: row.try_get::<i64, _>("hours_remaining")? as i32,
                record_time_us: row.try_get("record_time_us")?,
                estimated_by: row.try_get("estimated_by")?,
            });
    }
    Ok(logs)
}

/// Adds `hours` and `count` to the item's totals and bumps its revision; returns the new
/// totals. One upsert on the item's row, which also serialises concurrent writers to the
/// same item, so the sum is exact.
pub async fn add_to_totals(
    uow: &mut UnitOfWork,
    tenant: &str,
    backlog_item_id: &str,
    hours: i64,
    count: i64,
) -> AppResult<Totals> {
    let change = TotalsChange {
        tenant,
        backlog_item_id,
        hours,
        count,
        changes: 1,
    };
    add_to_totals_all(uow, &[change])
        .await?
        .remove(backlog_item_id)
        .ok_or_else(|| AppError::Internal("the totals upsert returned no row".into()))
}

fn totals_from(backlog_item_id: &str, row: &AnyRow) -> Result<Totals, sqlx::Error> {
    Ok(Totals {
        backlog_item_id: backlog_item_id.to_owned(),
        hours_remaining: row.try_get("hours_remaining")?,
        task_count: row.try_get("task_count")?,
        revision: row.try_get("revision")?,
    })
}

/// The item's totals (zeros if it never had tasks, or belongs to another tenant).
pub async fn totals(
    conn: &mut AnyConnection,
    tenant: &str,
    backlog_item_id: &str,
) -> AppResult<Totals> {
    let mut totals = totals_all(conn, &[(tenant, backlog_item_id)]).await?;
    Ok(totals.remove(backlog_item_id).unwrap_or_default())
}

/// The totals of each `(tenant, item)`, by item, in one query (zeros for an item that
/// never had tasks, or belongs to another tenant).
pub async fn totals_all(
    conn: &mut AnyConnection,
    items: &[(&str, &str)],
) -> AppResult<HashMap<String, Totals>> {
    let mut totals: HashMap<String, Totals> = items
        .iter()
        .map(|(_, item)| {
            let zeros = Totals {
                backlog_item_id: (*item).to_owned(),
                ..Default::default()
            };
            ((*item).to_owned(), zeros)
        })
        .collect();
    if items.is_empty() {
        return Ok(totals);
    }
    let ids: Vec<&str> = items.iter().map(|(_, item)| *item).collect();
    let mut statement = Statement::new(Engine::of(conn));
    statement
        .sql(
            "SELECT backlog_item_id, tenant_id, hours_remaining, task_count, revision \
             FROM item_totals WHERE ",
        )
        .any_of("backlog_item_id", &ids);
    let query = statement.query()?;
    for row in query.fetch_all(conn).await? {
        let item: String = row.try_get("backlog_item_id")?;
        let tenant: String = row.try_get("tenant_id")?;
        if items.iter().any(|(t, i)| *i == item && *t == tenant) {
            let found = totals_from(&item, &row)?;
            totals.insert(item, found);
        }
    }
    Ok(totals)
}

/// Every log entry on or before `last_day` of the tenant's tasks of `item_ids`, ordered by
/// task and day.
pub async fn burndown_entries(
    db: &Db,
    tenant: &str,
    item_ids: &[String],
    last_day: NaiveDate,
) -> AppResult<Vec<Entry>> {
    if item_ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = item_ids.iter().map(String::as_str).collect();
    let mut statement = Statement::new(db.engine());
    statement
        .sql(
            "SELECT l.backlog_item_id, l.task_id, l.day, l.hours_remaining FROM estimation_log l \
             JOIN tasks t ON t.id = l.task_id WHERE t.tenant_id = ",
        )
        .placeholder()
        .bind(tenant.to_owned())
        .sql(" AND l.day <= ")
        .placeholder()
        .bind(last_day.format("%Y-%m-%d").to_string())
        .sql(" AND ")
        .any_of("l.backlog_item_id", &ids)
        .sql(" ORDER BY l.task_id, l.day");
    let query = statement.query()?;
    query
        .fetch_all(db.pool())
        .await?
        .iter()
        .map(|row| {
            let day: String = row.try_get("day")?;
            let day = stored::date(&day, "estimation_log.day")?;
            Ok(Entry {
                backlog_item_id: row.try_get("backlog_item_id")?,
                task_id: row.try_get("task_id")?,
                day,
                hours: row.try_get("hours_remaining")?,
            })
        })
        .collect()
}

/// What an estimate batch reads: the live tasks among `ids` (any tenant: callers check)
/// with their whole estimation logs, oldest day first, and their items' totals.
#[derive(Debug, Default)]
pub struct EstimateRead {
    /// Each task with the log entries read, by task id.
    pub tasks: HashMap<String, (Task, Vec<LogEntry>)>,
    /// The stored totals of the tasks' items, by item (an item without a totals row is
    /// missing).
    pub totals: HashMap<String, Totals>,
    /// The team zones of the tasks' tenants, by tenant (a tenant in UTC may be missing).
    pub zones: HashMap<String, TeamZone>,
}

/// Reads what an estimate batch decides on, in one query and without locking: the batch
/// writes with guards ([`progress_write`], [`totals_writes`]) that fail if any of it
/// changes before the write. Of the tasks' logs it reads the entries of `days` (one
/// primary-key lookup per task and day), and the whole logs of `whole_logs`.
pub async fn read_for_estimates(
    db: &Db,
    ids: &[&str],
    days: &[NaiveDate],
    whole_logs: &[&str],
) -> AppResult<EstimateRead> {
    let mut read = EstimateRead::default();
    if ids.is_empty() {
        return Ok(read);
    }
    let mut statement = Statement::new(db.engine());
    statement.sql(concat!(
        "SELECT ",
        task_columns!("t."),
        ", l.day AS log_day, l.hours_remaining AS log_hours, \
             l.record_time_us AS log_record_time_us, l.estimated_by AS log_estimated_by, \
             tot.hours_remaining AS total_hours, \
             tot.task_count AS total_count, tot.revision AS total_revision, \
             z.time_zone AS team_zone FROM tasks t \
             LEFT JOIN team_zones z ON z.tenant_id = t.tenant_id \
             LEFT JOIN estimation_log l ON l.task_id = t.id AND ("
    ));
    let day_texts: Vec<String> = days.iter().map(|day| day.to_string()).collect();
    let day_texts: Vec<&str> = day_texts.iter().map(String::as_str).collect();
    if day_texts.is_empty() {
        statement.sql("FALSE");
    } else {
        statement.any_of("l.day", &day_texts);
    }
    if !whole_logs.is_empty() {
        statement.sql(" OR ").any_of("t.id", whole_logs);
    }
    statement
        .sql(") LEFT JOIN item_totals tot ON tot.backlog_item_id = t.backlog_item_id WHERE ")
        .any_of("t.id", ids)
        .sql(" AND t.removed_time_us IS NULL ORDER BY t.id, l.day");
    for row in statement.query()?.fetch_all(db.pool()).await? {
        let id: String = row.try_get("id")?;
        let entry = match read.tasks.get_mut(&id) {
            Some(entry) => entry,
            None => {
                let task = task_from(&row)?;
                let zone: Option<String> = row.try_get("team_zone")?;
                if let Some(zone) = zone {
                    read.zones.insert(
                        task.tenant_id.clone(),
                        TeamZone::stored(&zone, "team_zones.time_zone")?,
                    );
                }
                let revision: Option<i64> = row.try_get("total_revision")?;
                if let Some(revision) = revision {
                    let totals = Totals {
                        backlog_item_id: task.backlog_item_id.clone(),
                        hours_remaining: row.try_get("total_hours")?,
                        task_count: row.try_get("total_count")?,
                        revision,
                    };
                    read.totals.insert(task.backlog_item_id.clone(), totals);
                }
                read.tasks.entry(id).or_insert((task, Vec::new()))
            }
        };
        let day: Option<String> = row.try_get("log_day")?;
        if let Some(day) = day {
            let day = stored::date(&day, "estimation_log.day")?;
            let hours: i64 = row.try_get("log_hours")?;
            entry.1.push(LogEntry {
                day,
                hours: hours as i32,
                record_time_us: row.try_get("log_record_time_us")?,
                estimated_by: row.try_get("log_estimated_by")?,
            });
        }
    }
    Ok(read)
}

/// Writes each task's new progress, guarded: every task must still be live at the
/// version it was read at (`(task, read version)` pairs).
pub fn progress_write<'a>(tasks: &'a [(&'a Task, i64)]) -> GuardedWrite<'a> {
    GuardedWrite {
        build: Box::new(move |statement: &mut Statement| {
            let rows = RowSet(vec![
                Column::text(tasks.iter().map(|(t, _)| t.id.as_str())),
                Column::BigInt(tasks.iter().map(|(_, read)| *read).collect()),
                Column::BigInt(tasks.iter().map(|(t, _)| t.status as i64).collect()),
                Column::BigInt(tasks.iter().map(|(t, _)| i64::from(t.hours)).collect()),
                Column::Text(
                    tasks
                        .iter()
                        .map(|(t, _)| day_text(t.latest_log_day))
                        .collect(),
                ),
                Column::BigInt(tasks.iter().map(|(t, _)| t.version).collect()),
                Column::BigInt(tasks.iter().map(|(t, _)| t.update_time_us).collect()),
            ]);
            statement
                .sql(
                    "UPDATE tasks SET status = v.column3, hours_remaining = v.column4, \
                     latest_log_day = v.column5, version = v.column6, \
                     update_time_us = v.column7 FROM ",
                )
                .rows(rows)
                .sql(
                    " WHERE tasks.id = v.column1 AND tasks.version = v.column2 \
                     AND tasks.removed_time_us IS NULL",
                );
        }),
        rows: Some(tasks.len() as u64),
    }
}

/// One day's estimate of one task, to record.
pub struct LogWrite<'a> {
    /// The task.
    pub task_id: &'a str,
    /// Its backlog item.
    pub backlog_item_id: &'a str,
    /// The day.
    pub day: NaiveDate,
    /// Hours remaining that day.
    pub hours: i32,
    /// When it was recorded (µs).
    pub record_time_us: i64,
    /// Who gave it.
    pub estimated_by: &'a str,
}

/// Records (or replaces) the estimates in `writes`. At most one write per `(task, day)`:
/// one statement may not change a row twice.
pub fn log_write<'a>(writes: &'a [LogWrite<'a>]) -> GuardedWrite<'a> {
    GuardedWrite {
        build: Box::new(move |statement: &mut Statement| {
            let rows = RowSet(vec![
                Column::text(writes.iter().map(|w| w.task_id)),
                Column::text(writes.iter().map(|w| w.day.format("%Y-%m-%d").to_string())),
                Column::text(writes.iter().map(|w| w.backlog_item_id)),
                Column::BigInt(writes.iter().map(|w| i64::from(w.hours)).collect()),
                Column::BigInt(writes.iter().map(|w| w.record_time_us).collect()),
                Column::text(writes.iter().map(|w| w.estimated_by)),
            ]);
            statement
                .sql(
                    "INSERT INTO estimation_log (task_id, day, backlog_item_id, \
                     hours_remaining, record_time_us, estimated_by) SELECT * FROM ",
                )
                .rows(rows)
                .sql(
                    " WHERE true ON CONFLICT (task_id, day) DO UPDATE SET \
                     hours_remaining = excluded.hours_remaining, \
                     record_time_us = excluded.record_time_us, \
                     estimated_by = excluded.estimated_by",
                );
        }),
        rows: None,
    }
}

/// An item's totals after a batch, to write over the ones it read.
pub struct TotalsWrite<'a> {
    /// The item's tenant.
    pub tenant: &'a str,
    /// The totals to store.
    pub totals: Totals,
    /// The revision read (`None`: the item had no totals row).
    pub read_revision: Option<i64>,
}

/// Writes `writes`, guarded: each stored row must still be at the revision read, and a
/// row that was missing must still be missing.
pub fn totals_writes<'a>(writes: &'a [TotalsWrite<'a>]) -> Vec<GuardedWrite<'a>> {
    let (stored, missing): (Vec<&TotalsWrite<'_>>, Vec<&TotalsWrite<'_>>) =
        writes.iter().partition(|w| w.read_revision.is_some());
    let mut guarded = Vec::new();
    if !stored.is_empty() {
        let rows = stored.len() as u64;
        guarded.push(GuardedWrite {
            build: Box::new(move |statement: &mut Statement| {
                let rows = RowSet(vec![
                    Column::text(stored.iter().map(|w| w.totals.backlog_item_id.as_str())),
                    Column::BigInt(
                        stored
                            .iter()
                            .map(|w| w.read_revision.unwrap_or_default())
                            .collect(),
                    ),
                    Column::BigInt(stored.iter().map(|w| w.totals.hours_remaining).collect()),
                    Column::BigInt(stored.iter().map(|w| w.totals.task_count).collect()),
                    Column::BigInt(stored.iter().map(|w| w.totals.revision).collect()),
                ]);
                statement
                    .sql(
                        "UPDATE item_totals SET hours_remaining = v.column3, \
                         task_count = v.column4, revision = v.column5 FROM ",
                    )
                    .rows(rows)
                    .sql(
                        " WHERE item_totals.backlog_item_id = v.column1 \
                         AND item_totals.revision = v.column2",
                    );
            }),
            rows: Some(rows),
        });
    }
    if !missing.is_empty() {
        let rows = missing.len() as u64;
        guarded.push(GuardedWrite {
            build: Box::new(move |statement: &mut Statement| {
                let rows = RowSet(vec![
                    Column::text(missing.iter().map(|w| w.totals.backlog_item_id.as_str())),
                    Column::text(missing.iter().map(|w| w.tenant)),
                    Column::BigInt(missing.iter().map(|w| w.totals.hours_remaining).collect()),
                    Column::BigInt(missing.iter().map(|w| w.totals.task_count).collect()),
                    Column::BigInt(missing.iter().map(|w| w.totals.revision).collect()),
                ]);
                statement
                    .sql(
                        "INSERT INTO item_totals (backlog_item_id, tenant_id, hours_remaining, \
                         task_count, revision) SELECT * FROM ",
                    )
                    .rows(rows)
                    .sql(" WHERE true ON CONFLICT (backlog_item_id) DO NOTHING");
            }),
            rows: Some(rows),
        });
    }
    guarded
}

/// Changes to one item's totals: `hours` and `count` added, `revision` bumped by
/// `changes`.
pub struct TotalsChange<'a> {
    /// The item's tenant.
    pub tenant: &'a str,
    /// The item.
    pub backlog_item_id: &'a str,
    /// Hours added (negative: removed).
    pub hours: i64,
    /// Tasks added.
    pub count: i64,
    /// Changes made (the revision moves by this much).
    pub changes: i64,
}

/// Applies `changes` (one per item) in one upsert and returns the new totals per item.
pub async fn add_to_totals_all(
    uow: &mut UnitOfWork,
    changes: &[TotalsChange<'_>],
) -> AppResult<HashMap<String, Totals>> {
    let mut totals = HashMap::new();
    if changes.is_empty() {
        return Ok(totals);
    }
    let mut statement = Statement::new(uow.engine());
    statement
        .sql(
            "INSERT INTO item_totals \
             (backlog_item_id, tenant_id, hours_remaining, task_count, revision) \
             SELECT * FROM ",
        )
        .rows(RowSet(vec![
            Column::text(changes.iter().map(|c| c.backlog_item_id)),
            Column::text(changes.iter().map(|c| c.tenant)),
            Column::BigInt(changes.iter().map(|c| c.hours).collect()),
            Column::BigInt(changes.iter().map(|c| c.count).collect()),
            Column::BigInt(changes.iter().map(|c| c.changes).collect()),
        ]))
        .sql(
            " WHERE true ON CONFLICT (backlog_item_id) DO UPDATE SET \
             hours_remaining = item_totals.hours_remaining + excluded.hours_remaining, \
             task_count = item_totals.task_count + excluded.task_count, \
             revision = item_totals.revision + excluded.revision \
             RETURNING backlog_item_id, hours_remaining, task_count, revision",
        );
    let query = statement.query()?;
    for row in query.fetch_all(uow.conn()).await? {
        let item: String = row.try_get("backlog_item_id")?;
        let item_totals = totals_from(&item, &row)?;
        totals.insert(item, item_totals);
    }
    Ok(totals)
}

/// Records what the planning service says of `tenant`'s team members (id, standing,
/// member version): each fact replaces the one kept unless that is newer. Returns how
/// many were applied. Member facts come one at a time, or a page at a time when planning
/// starts, so one statement per fact is enough.
pub async fn record_members(
    db: &Db,
    tenant: &str,
    facts: &[(String, Standing, i64)],
) -> AppResult<u64> {
    let mut uow = db.begin().await?;
    let mut applied = 0;
    for (member_id, standing, version) in facts {
        applied += sqlx::query(
            "INSERT INTO members (tenant_id, member_id, enabled, team_member, member_version) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, member_id) DO UPDATE \
             SET enabled = excluded.enabled, team_member = excluded.team_member, \
                 member_version = excluded.member_version \
             WHERE members.member_version <= excluded.member_version",
        )
        .bind(tenant)
        .bind(member_id)
        .bind(i64::from(standing.enabled))
        .bind(i64::from(standing.team_member))
        .bind(*version)
        .execute(uow.conn())
        .await?
        .rows_affected();
    }
    uow.commit().await?;
    Ok(applied)
}

/// What is recorded of member `member_id` of `tenant`; none if they are not on the team.
pub async fn member_standing(
    db: &Db,
    tenant: &str,
    member_id: &str,
) -> AppResult<Option<Standing>> {
    let row = sqlx::query(
        "SELECT enabled, team_member FROM members WHERE tenant_id = $1 AND member_id = $2",
    )
    .bind(tenant)
    .bind(member_id)
    .fetch_optional(db.pool())
    .await?;
    row.map(|row| -> AppResult<Standing> {
        Ok(Standing {
            enabled: row.try_get::<i64, _>("enabled")? != 0,
            team_member: row.try_get::<i64, _>("team_member")? != 0,
        })
    })
    .transpose()
}

/// Records `tenant`'s team zone of settings `version`; false if a newer one is kept.
pub async fn record_team_zone(
    db: &Db,
    tenant: &str,
    zone: TeamZone,
    version: i64,
) -> AppResult<bool> {
    let applied = sqlx::query(
        "INSERT INTO team_zones (tenant_id, time_zone, settings_version) VALUES ($1, $2, $3) \
         ON CONFLICT (tenant_id) DO UPDATE \
         SET time_zone = excluded.time_zone, settings_version = excluded.settings_version \
         WHERE team_zones.settings_version <= excluded.settings_version",
    )
    .bind(tenant)
    .bind(zone.name())
    .bind(version)
    .execute(db.pool())
    .await?
    .rows_affected();
    Ok(applied > 0)
}

/// `tenant`'s team zone as planning last told us (UTC until it has).
pub async fn team_zone(db: &Db, tenant: &str) -> AppResult<TeamZone> {
    let name: Option<String> =
        sqlx::query_scalar("SELECT time_zone FROM team_zones WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_optional(db.pool())
            .await?;
    name.map_or(Ok(TeamZone::UTC), |name| {
        TeamZone::stored(&name, "team_zones.time_zone")
    })
}
