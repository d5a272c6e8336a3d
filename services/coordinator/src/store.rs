//! The coordinator's own database: the lease among replicas and the poison events. (The
//! feed checkpoint is the platform follower's.)

use std::collections::HashSet;

use agilepm_platform::domain::error::AppResult;
use agilepm_platform::domain::time::now_micros;
use agilepm_platform::storage::db::Db;
use sqlx::Row;
use sqlx::any::AnyRow;

use std::time::Duration;

use crate::domain::PoisonEvent;

/// Takes or renews lease `name` for `holder` for `ttl`; true if `holder` holds it now.
pub async fn acquire_lease(db: &Db, name: &str, holder: &str, ttl: Duration) -> AppResult<bool> {
    let now = now_micros();
    let result = sqlx::query(
        "INSERT INTO leases (name, holder, expires_us) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_us = excluded.expires_us \
         WHERE leases.holder = excluded.holder OR leases.expires_us < $4",
    )
    .bind(name)
    .bind(holder)
    .bind(now + ttl.as_micros() as i64)
    .bind(now)
    .execute(db.pool())
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Gives lease `name` up (on shutdown), so a standby can take over at once.
pub async fn release_lease(db: &Db, name: &str, holder: &str) -> AppResult<()> {
    sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
        .bind(name)
        .bind(holder)
        .execute(db.pool())
        .await?;
    Ok(())
}

fn poison_from(row: &AnyRow) -> Result<PoisonEvent, sqlx::Error> {
    Ok(PoisonEvent {
        event_id: row.try_get("event_id")?,
        position: row.try_get("position")?,
        backlog_item_id: row.try_get("backlog_item_id")?,
        tenant_id: row.try_get("tenant_id")?,
        error: row.try_get("error")?,
        record_time_us: row.try_get("record_time_us")?,
    })
}

/// Records (or updates) a poison event.
pub async fn record_poison(db: &Db, event: &PoisonEvent) -> AppResult<()> {
    sqlx::query(
        "INSERT INTO poison_events (event_id, position, backlog_item_id, tenant_id, error, record_time_us, skipped) \
         VALUES ($1, $2, $3, $4, $5, $6, 0) ON CONFLICT (event_id) DO UPDATE SET error = excluded.error, \
         record_time_us = excluded.record_time_us",
    )
    .bind(&event.event_id)
    .bind(&event.position)
    .bind(&event.backlog_item_id)
    .bind(&event.tenant_id)
    .bind(&event.error)
    .bind(event.record_time_us)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// The ids of poison events operators skipped, and of those still blocking.
pub async fn poison_ids(db: &Db) -> AppResult<(HashSet<String>, HashSet<String>)> {
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT event_id, skipped FROM poison_events")
        .fetch_all(db.pool())
        .await?;
    let (skipped, blocking): (Vec<_>, Vec<_>) =
        rows.into_iter().partition(|(_, skipped)| *skipped == 1);
    Ok((
        skipped.into_iter().map(|r| r.0).collect(),
        blocking.into_iter().map(|r| r.0).collect(),
    ))
}

/// Forgets `event_ids` after they were applied successfully on a retry.
pub async fn clear_poison(db: &Db, event_ids: &[String]) -> AppResult<()> {
    for id in event_ids {
        sqlx::query("DELETE FROM poison_events WHERE event_id = $1 AND skipped = 0")
            .bind(id)
            .execute(db.pool())
            .await?;
    }
    Ok(())
}

/// Marks `event_id` skipped; returns it, or `None` if no such poison event.
pub async fn skip_poison(db: &Db, event_id: &str) -> AppResult<Option<PoisonEvent>> {
    sqlx::query("UPDATE poison_events SET skipped = 1 WHERE event_id = $1")
        .bind(event_id)
        .execute(db.pool())
        .await?;
    Ok(sqlx::query(
        "SELECT event_id, position, backlog_item_id, tenant_id, error, record_time_us \
         FROM poison_events WHERE event_id = $1",
    )
    .bind(event_id)
    .fetch_optional(db.pool())
    .await?
    .map(|row| poison_from(&row))
    .transpose()?)
}

/// Poison events still blocking (not skipped), oldest first, after `after` (event id).
pub async fn list_poison(db: &Db, after: &str, limit: u32) -> AppResult<Vec<PoisonEvent>> {
    Ok(sqlx::query(
        "SELECT event_id, position, backlog_item_id, tenant_id, error, record_time_us FROM poison_events \
         WHERE skipped = 0 AND event_id > $1 ORDER BY event_id LIMIT $2",
    )
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(db.pool())
    .await?
    .iter()
    .map(poison_from)
    .collect::<Result<_, _>>()?)
}

/// How many poison events block progress.
pub async fn count_poison(db: &Db) -> AppResult<i64> {
    Ok(
        sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM poison_events WHERE skipped = 0")
            .fetch_one(db.pool())
            .await?,
    )
}
