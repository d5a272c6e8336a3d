//! Idempotency keys: every command with a `request_id` runs through [`once`], so a retry
//! is a true no-op and a reused key is caught.
//!
//! The first call with a key records the request's fingerprint (a SHA-256 of its method
//! and its encoded body) and, once the command has completed, its response. Then:
//!
//! - the same key with the same request gets the recorded response back: the command
//!   does not run again, so nothing is written, no version moves, no event is emitted;
//! - the same key with a different request (another body or another method) is refused
//!   with ALREADY_EXISTS naming the key: it is a client bug, and silently answering with
//!   another request's result would hide it;
//! - a command that fails gives its key back, so a corrected request may use it (a failed
//!   command changed nothing);
//! - a key recorded but not completed (its process died between the command's commit and
//!   recording the response, or a concurrent call is still running it) runs the command
//!   again.
//!   That is safe because every command is itself idempotent on its key: creates find
//!   the row their key created, multi-step commands derive each step's key from it, and
//!   a move to where an item already is writes nothing.
//!
//! Keys are per tenant. The response is stored as the protobuf it was sent as. A key is
//! remembered for [`KEY_LIFETIME`] after its first use, then [`sweep`] forgets it, so the
//! table holds about a day of commands (a retry comes within seconds; a create retried
//! later still finds what its key created, by the key kept on the row).

use std::future::Future;
use std::time::Duration;

use prost::Message;
use sha2::{Digest as _, Sha256};
use sqlx::Row as _;

use crate::domain::error::{AppError, AppResult};
use crate::domain::time::now_micros;
use crate::storage::db::Db;
use tokio_util::sync::CancellationToken;

/// How long a key is remembered after its first use (at least; [`sweep`] runs every
/// [`SWEEP_EVERY`]).
pub const KEY_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// How often [`sweep`] forgets the keys past their lifetime.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Keys deleted per statement: a sweep never holds a long write.
const FORGET_CHUNK: i64 = 1000;

/// A command's idempotency key and the fingerprint of the request that carries it.
#[derive(Debug, Clone)]
pub struct Key {
    tenant: String,
    request_id: String,
    fingerprint: String,
}

impl Key {
    /// The key `request_id` of `tenant` for `request` of `method` (its full gRPC name).
    /// Take it before the request is parsed; use it only once the request is valid.
    pub fn new(tenant: &str, request_id: &str, method: &str, request: &impl Message) -> Key {
        let mut hash = Sha256::new();
        hash.update(method.as_bytes());
        hash.update([0]);
        // prost encodes fields in field-number order and our requests have no maps, so
        // equal requests encode equally.
        hash.update(request.encode_to_vec());
        Key {
            tenant: tenant.to_owned(),
            request_id: request_id.to_owned(),
            fingerprint: hex::encode(hash.finalize()),
        }
    }
}

/// What the key store holds for a key.
enum Recorded<R> {
    /// The key is new (and now recorded as this request's).
    New,
    /// This request ran before but did not complete.
    Incomplete,
    /// This request completed with this response.
    Completed(R),
}

/// Runs `command` once per key: a retry with the same request gets the first completed
/// response back without running it; a different request with the key is refused.
pub async fn once<R, F, Fut>(db: &Db, key: &Key, command: F) -> AppResult<R>
where
    R: Message + Default,
    F: FnOnce() -> Fut,
    Fut: Future<Output = AppResult<R>>,
{
    match claim::<R>(db, key).await? {
        Recorded::Completed(response) => return Ok(response),
        Recorded::New | Recorded::Incomplete => {}
    }
    let response = match command().await {
        Ok(response) => response,
        Err(error) => {
            release(db, key).await;
            return Err(error);
        }
    };
    sqlx::query(
        "UPDATE idempotency_keys SET response = $1 \
         WHERE tenant_id = $2 AND request_id = $3 AND fingerprint = $4",
    )
    .bind(response.encode_to_vec())
    .bind(&key.tenant)
    .bind(&key.request_id)
    .bind(&key.fingerprint)
    .execute(db.pool())
    .await?;
    Ok(response)
}

/// Gives back the claim of a command that failed. Best effort: if this fails too, the
/// key stays claimed and a retry with the same request still works.
async fn release(db: &Db, key: &Key) {
    let released = sqlx::query(
        "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND request_id = $2 \
         AND fingerprint = $3 AND response IS NULL",
    )
    .bind(&key.tenant)
    .bind(&key.request_id)
    .bind(&key.fingerprint)
    .execute(db.pool())
    .await;
    if let Err(error) = released {
        tracing::warn!(%error, request_id = %key.request_id, "could not release an idempotency key");
    }
}

/// Records `key` if it is new, and says what was recorded before.
async fn claim<R: Message + Default>(db: &Db, key: &Key) -> AppResult<Recorded<R>> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (tenant_id, request_id, fingerprint, response, create_time_us) \
         VALUES ($1, $2, $3, NULL, $4) ON CONFLICT (tenant_id, request_id) DO NOTHING",
    )
    .bind(&key.tenant)
    .bind(&key.request_id)
    .bind(&key.fingerprint)
    .bind(now_micros())
    .execute(db.pool())
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Recorded::New);
    }
    let row = sqlx::query(
        "SELECT fingerprint, response FROM idempotency_keys WHERE tenant_id = $1 AND request_id = $2",
    )
    .bind(&key.tenant)
    .bind(&key.request_id)
    .fetch_one(db.pool())
    .await?;
    let fingerprint: String = row.try_get("fingerprint")?;
    if fingerprint != key.fingerprint {
        return Err(AppError::AlreadyExists(format!(
            "request_id {:?} was already used for a different request (another method or \
             body); a retry must repeat the request exactly, and a new request needs a new \
             request_id",
            key.request_id
        )));
    }
    let response: Option<Vec<u8>> = row.try_get("response")?;
    match response {
        None => Ok(Recorded::Incomplete),
        Some(bytes) => R::decode(bytes.as_slice())
            .map(Recorded::Completed)
            .map_err(|error| {
                AppError::Internal(format!(
                    "the stored response of request_id {:?} does not decode: {error}",
                    key.request_id
                ))
            }),
    }
}

/// Deletes the keys first used before `cutoff_us`, [`FORGET_CHUNK`] at a time; returns
/// how many went.
pub async fn forget_older_than(db: &Db, cutoff_us: i64) -> AppResult<u64> {
    let mut forgotten = 0;
    loop {
        // Oldest first through the age index; the key columns pick the rows to delete,
        // which both engines accept (unlike DELETE ... LIMIT).
        let deleted = sqlx::query(
            "DELETE FROM idempotency_keys WHERE (tenant_id, request_id) IN \
             (SELECT tenant_id, request_id FROM idempotency_keys WHERE create_time_us < $1 \
              ORDER BY create_time_us LIMIT $2)",
        )
        .bind(cutoff_us)
        .bind(FORGET_CHUNK)
        .execute(db.pool())
        .await?
        .rows_affected();
        forgotten += deleted;
        if deleted < FORGET_CHUNK as u64 {
            return Ok(forgotten);
        }
    }
}

/// Forgets the keys past [`KEY_LIFETIME`] every [`SWEEP_EVERY`] until `shutdown`. A failed
/// run is retried at the next; the table only grows meanwhile.
pub async fn sweep(db: Db, service: &'static str, shutdown: CancellationToken) {
    let lifetime = i64::try_from(KEY_LIFETIME.as_micros()).unwrap_or(i64::MAX);
    let mut interval = tokio::time::interval(SWEEP_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        match forget_older_than(&db, now_micros() - lifetime).await {
            Ok(0) => {}
            Ok(forgotten) => tracing::info!(
                service,
                forgotten,
                "idempotency keys past their lifetime forgotten"
            ),
            Err(error) => {
                tracing::warn!(service, %error, "forgetting old idempotency keys failed; retrying at the next run")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_cover_method_and_body() {
        let body = prost_types::Duration {
            seconds: 1,
            nanos: 0,
        };
        let other = prost_types::Duration {
            seconds: 2,
            nanos: 0,
        };
        let key = |method, body| Key::new("t", "r", method, body).fingerprint;
        assert_eq!(key("a/B", &body), key("a/B", &body));
        assert_ne!(key("a/B", &body), key("a/C", &body));
        assert_ne!(key("a/B", &body), key("a/B", &other));
    }
}
