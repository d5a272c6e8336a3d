//! One active follower among coordinator replicas: a lease row in the coordinator's own
//! database. The holder renews it well before it expires; a standby takes it over only
//! once it has expired. Correctness never depends on the lease (the backlog-item
//! service's revision guard makes duplicate or reordered reconciles harmless); the lease
//! only keeps replicas from doing the same work twice in the steady state.

use std::time::Duration;

use agilepm_platform::db::Db;
use agilepm_platform::time::now_micros;

/// The lease's name: one feed, one active follower.
pub const TASK_FEED_LEASE: &str = "task-feed";
/// How long a lease lasts without renewal.
pub const TTL: Duration = Duration::from_secs(10);
/// How often the holder renews (and a standby tries to acquire).
pub const RENEW_EVERY: Duration = Duration::from_secs(2);

/// Takes or renews the lease for `holder`; true if `holder` holds it now.
pub async fn acquire(db: &Db, name: &str, holder: &str) -> Result<bool, sqlx::Error> {
    let now = now_micros();
    let result = sqlx::query(
        "INSERT INTO leases (name, holder, expires_us) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_us = excluded.expires_us \
         WHERE leases.holder = excluded.holder OR leases.expires_us < $4",
    )
    .bind(name)
    .bind(holder)
    .bind(now + TTL.as_micros() as i64)
    .bind(now)
    .execute(db.pool())
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Gives the lease up (on shutdown), so a standby can take over at once.
pub async fn release(db: &Db, name: &str, holder: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
        .bind(name)
        .bind(holder)
        .execute(db.pool())
        .await?;
    Ok(())
}
