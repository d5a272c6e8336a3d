//! The coordinator's own database: the lease among replicas and the parked items' poison
//! events. (The feed checkpoint is the platform follower's.)

use std::collections::HashSet;

use agilepm_platform::domain::error::AppResult;
use agilepm_platform::domain::time::now_micros;
use agilepm_platform::storage::db::Db;
use sqlx::Row;
use sqlx::any::AnyRow;

use std::time::Duration;

use crate::domain::{ParkedItem, PoisonEvent};

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

/// Records a poison event (one recorded already keeps what it recorded first: a replayed
/// batch does not overwrite why its item was parked).
pub async fn record_poison(db: &Db, event: &PoisonEvent) -> AppResult<()> {
    sqlx::query(
        "INSERT INTO poison_events (event_id, position, backlog_item_id, tenant_id, error, record_time_us, skipped) \
         VALUES ($1, $2, $3, $4, $5, $6, 0) ON CONFLICT (event_id) DO NOTHING",
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

/// The poison events operators skipped (by id), and the items parked (tenant, item).
pub async fn parked(db: &Db) -> AppResult<(HashSet<String>, HashSet<(String, String)>)> {
    let rows: Vec<(String, String, String, i64)> =
        sqlx::query_as("SELECT event_id, tenant_id, backlog_item_id, skipped FROM poison_events")
            .fetch_all(db.pool())
            .await?;
    let mut skipped = HashSet::new();
    let mut items = HashSet::new();
    for (event_id, tenant, item, was_skipped) in rows {
        if was_skipped == 1 {
            skipped.insert(event_id);
        } else {
            items.insert((tenant, item));
        }
    }
    Ok((skipped, items))
}

/// The ids of the events a parked item holds (none if it is not parked), oldest first.
pub async fn parked_events(db: &Db, tenant: &str, item: &str) -> AppResult<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT event_id FROM poison_events WHERE tenant_id = $1 AND backlog_item_id = $2 \
         AND skipped = 0 ORDER BY record_time_us, event_id",
    )
    .bind(tenant)
    .bind(item)
    .fetch_all(db.pool())
    .await?)
}

/// Releases `event_ids` of a parked item once a retry settled them.
pub async fn release(db: &Db, event_ids: &[String]) -> AppResult<()> {
    let mut uow = db.begin().await?;
    for id in event_ids {
        sqlx::query("DELETE FROM poison_events WHERE event_id = $1 AND skipped = 0")
            .bind(id)
            .execute(uow.conn())
            .await?;
    }
    uow.commit().await?;
    Ok(())
}

/// Records a retry's failure on every event of the parked item.
pub async fn record_retry_failure(db: &Db, tenant: &str, item: &str, error: &str) -> AppResult<()> {
    sqlx::query(
        "UPDATE poison_events SET error = $1 WHERE tenant_id = $2 AND backlog_item_id = $3 \
         AND skipped = 0",
    )
    .bind(error)
    .bind(tenant)
    .bind(item)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Skips every event of a parked item; returns how many.
pub async fn skip_item(db: &Db, tenant: &str, item: &str) -> AppResult<u64> {
    Ok(sqlx::query(
        "UPDATE poison_events SET skipped = 1 WHERE tenant_id = $1 AND backlog_item_id = $2 \
         AND skipped = 0",
    )
    .bind(tenant)
    .bind(item)
    .execute(db.pool())
    .await?
    .rows_affected())
}

/// Parked items after (`tenant`, `item`) in (tenant, item) order, at most `limit`.
pub async fn list_parked(db: &Db, after: (&str, &str), limit: u32) -> AppResult<Vec<ParkedItem>> {
    Ok(sqlx::query(
        "SELECT tenant_id, backlog_item_id, CAST(COUNT(*) AS BIGINT) AS events, \
         MIN(record_time_us) AS park_time_us, \
         (SELECT f.error FROM poison_events AS f WHERE f.tenant_id = p.tenant_id \
            AND f.backlog_item_id = p.backlog_item_id AND f.skipped = 0 \
            ORDER BY f.record_time_us, f.event_id LIMIT 1) AS error \
         FROM poison_events AS p WHERE p.skipped = 0 \
         AND (p.tenant_id > $1 OR (p.tenant_id = $1 AND p.backlog_item_id > $2)) \
         GROUP BY p.tenant_id, p.backlog_item_id ORDER BY p.tenant_id, p.backlog_item_id LIMIT $3",
    )
    .bind(after.0)
    .bind(after.1)
    .bind(i64::from(limit))
    .fetch_all(db.pool())
    .await?
    .iter()
    .map(|row| {
        Ok(ParkedItem {
            tenant_id: row.try_get("tenant_id")?,
            backlog_item_id: row.try_get("backlog_item_id")?,
            error: row.try_get("error")?,
            events: row.try_get("events")?,
            park_time_us: row.try_get("park_time_us")?,
        })
    })
    .collect::<Result<_, sqlx::Error>>()?)
}

/// How many items are parked.
pub async fn count_parked(db: &Db) -> AppResult<i64> {
    Ok(sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM (SELECT DISTINCT tenant_id, backlog_item_id \
         FROM poison_events WHERE skipped = 0) AS items",
    )
    .fetch_one(db.pool())
    .await?)
}

/// Skips the parked item `event_id` belongs to (every event of it); returns the event,
/// or `None` if no parked item holds it.
pub async fn skip_poison(db: &Db, event_id: &str) -> AppResult<Option<PoisonEvent>> {
    let event = sqlx::query(
        "SELECT event_id, position, backlog_item_id, tenant_id, error, record_time_us \
         FROM poison_events WHERE event_id = $1 AND skipped = 0",
    )
    .bind(event_id)
    .fetch_optional(db.pool())
    .await?
    .map(|row| poison_from(&row))
    .transpose()?;
    if let Some(event) = &event {
        skip_item(db, &event.tenant_id, &event.backlog_item_id).await?;
    }
    Ok(event)
}

/// Events of parked items (not skipped), after `after` (event id), in event id order.
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

/// How many events parked items hold.
pub async fn count_poison(db: &Db) -> AppResult<i64> {
    Ok(
        sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM poison_events WHERE skipped = 0")
            .fetch_one(db.pool())
            .await?,
    )
}
