//! Poison events: ones whose reconcile failed permanently. They are recorded with their
//! error and block the feed until an operator skips them (`SkipPoisonEvent`), because
//! skipping silently would leave an item's status wrong.

use std::collections::HashSet;
use std::sync::Mutex;

use agilepm_platform::db::Db;
use agilepm_platform::time::{now_micros, timestamp};
use agilepm_proto::coordinator::v1::PoisonEvent;
use sqlx::Row;
use sqlx::any::AnyRow;

fn from_row(row: &AnyRow) -> Result<PoisonEvent, sqlx::Error> {
    Ok(PoisonEvent {
        event_id: row.try_get("event_id")?,
        position: row.try_get("position")?,
        backlog_item_id: row.try_get("backlog_item_id")?,
        tenant_id: row.try_get("tenant_id")?,
        error: row.try_get("error")?,
        record_time: Some(timestamp(row.try_get("record_time_us")?)),
    })
}

/// Records (or updates) a poison event.
pub async fn record(db: &Db, event: &PoisonEvent) -> Result<(), sqlx::Error> {
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
    .bind(now_micros())
    .execute(db.pool())
    .await?;
    Ok(())
}

/// The ids of poison events operators skipped, and of those still blocking.
pub async fn ids(db: &Db) -> Result<(HashSet<String>, HashSet<String>), sqlx::Error> {
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

/// What this replica knows of the poison table, so that a batch need not read it: only
/// the leaseholder records poison events, so once a read finds none, none appear until
/// this replica records one or a new lease term begins (another replica may have recorded
/// some meanwhile); both call [`KnownEmpty::forget`]. Each `forget` bumps a generation,
/// and a read marks the table empty only if no `forget` happened since it began, so a
/// batch running beside one that records an event cannot hide it.
#[derive(Debug, Default)]
pub struct KnownEmpty {
    /// (generation, known empty)
    state: Mutex<(u64, bool)>,
}

impl KnownEmpty {
    /// Drops what is known: the next batch reads the table. Call *after* recording.
    pub fn forget(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.0 += 1;
        state.1 = false;
    }

    /// [`ids`], or two empty sets without a read while the table is known empty.
    pub async fn ids(&self, db: &Db) -> Result<(HashSet<String>, HashSet<String>), sqlx::Error> {
        let generation = {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.1 {
                return Ok((HashSet::new(), HashSet::new()));
            }
            state.0
        };
        let ids = ids(db).await?;
        if ids.0.is_empty() && ids.1.is_empty() {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.0 == generation {
                state.1 = true;
            }
        }
        Ok(ids)
    }
}

/// Forgets `event_ids` after they were applied successfully on a retry.
pub async fn clear(db: &Db, event_ids: &[String]) -> Result<(), sqlx::Error> {
    for id in event_ids {
        sqlx::query("DELETE FROM poison_events WHERE event_id = $1 AND skipped = 0")
            .bind(id)
            .execute(db.pool())
            .await?;
    }
    Ok(())
}

/// Marks `event_id` skipped; returns it, or `None` if no such poison event.
pub async fn skip(db: &Db, event_id: &str) -> Result<Option<PoisonEvent>, sqlx::Error> {
    sqlx::query("UPDATE poison_events SET skipped = 1 WHERE event_id = $1")
        .bind(event_id)
        .execute(db.pool())
        .await?;
    sqlx::query("SELECT event_id, position, backlog_item_id, tenant_id, error, record_time_us FROM poison_events WHERE event_id = $1")
        .bind(event_id)
        .fetch_optional(db.pool())
        .await?
        .map(|row| from_row(&row))
        .transpose()
}

/// Poison events still blocking (not skipped), oldest first, after `after` (event id).
pub async fn list(db: &Db, after: &str, limit: u32) -> Result<Vec<PoisonEvent>, sqlx::Error> {
    sqlx::query(
        "SELECT event_id, position, backlog_item_id, tenant_id, error, record_time_us FROM poison_events \
         WHERE skipped = 0 AND event_id > $1 ORDER BY event_id LIMIT $2",
    )
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(db.pool())
    .await?
    .iter()
    .map(from_row)
    .collect()
}

/// How many poison events block progress.
pub async fn count(db: &Db) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM poison_events WHERE skipped = 0")
        .fetch_one(db.pool())
        .await
}
