//! The notifier's units of work on subscriptions: each reads the subscription, decides,
//! and writes it guarded by the version it read, like every other aggregate's writes
//! (`platform::storage::optimistic`). Without an `expected_version` a lost race is
//! decided again on fresh state; with one, the caller gets ABORTED.

use agilepm_platform::domain::error::{AppError, AppResult};
use agilepm_platform::domain::time::now_micros;
use agilepm_platform::storage::db::Db;
use agilepm_platform::storage::optimistic::{Attempt, check_version, retry_lost_races};

use crate::domain::{MAX_SUBSCRIPTIONS_PER_TENANT, Subscription};
use crate::store;

/// Stores `subscription` (version 1) unless its tenant holds the most it may: the
/// bound holds under concurrent creates (the count moves in the same transaction).
pub async fn create(db: &Db, subscription: &Subscription) -> AppResult<()> {
    if !store::insert_subscription(db, subscription, MAX_SUBSCRIPTIONS_PER_TENANT).await? {
        return Err(AppError::ResourceExhausted(format!(
            "a tenant may hold {MAX_SUBSCRIPTIONS_PER_TENANT} subscriptions; delete one first"
        )));
    }
    Ok(())
}

/// Subscription `id` of `tenant`, at `expected_version` if one is given.
async fn current(
    db: &Db,
    tenant: &str,
    id: &str,
    expected_version: Option<i64>,
) -> AppResult<Subscription> {
    let what = format!("subscription {id}");
    let subscription = store::get_subscription(db, Some(tenant), id)
        .await?
        .ok_or_else(|| AppError::not_found(&what))?;
    check_version(&what, expected_version, subscription.version)?;
    Ok(subscription)
}

/// Applies `change` to subscription `id` and writes it as the next version. A change
/// that changes nothing writes nothing.
pub async fn change(
    db: &Db,
    tenant: &str,
    id: &str,
    expected_version: Option<i64>,
    change: impl Fn(&Subscription) -> AppResult<Subscription>,
) -> AppResult<Subscription> {
    let what = format!("subscription {id}");
    retry_lost_races(&what, expected_version, || async {
        let before = current(db, tenant, id, expected_version).await?;
        let mut after = change(&before)?;
        if after == before {
            return Ok(Attempt::Done(before));
        }
        after.version = before.version + 1;
        after.update_time_us = now_micros();
        Ok(
            if store::update_subscription(db, &after, before.version).await? {
                Attempt::Done(after)
            } else {
                Attempt::LostRace
            },
        )
    })
    .await
}

/// Deletes subscription `id` with its deliveries and gives its place back.
pub async fn delete(
    db: &Db,
    tenant: &str,
    id: &str,
    expected_version: Option<i64>,
) -> AppResult<()> {
    let what = format!("subscription {id}");
    retry_lost_races(&what, expected_version, || async {
        let before = current(db, tenant, id, expected_version).await?;
        Ok(
            if store::delete_subscription(db, tenant, id, before.version).await? {
                Attempt::Done(())
            } else {
                Attempt::LostRace
            },
        )
    })
    .await
}
