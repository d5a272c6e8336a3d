//! The UseCase aggregate's units of work: load, decide with `domain` (or place it with
//! the ranked list), save with `UseCaseUpdated`, in one transaction.

use agilepm_platform::domain::error::{AppError, AppResult};
use agilepm_platform::domain::time::now_micros;
use agilepm_platform::storage::db::Db;
use agilepm_platform::storage::optimistic::{self, Attempt, check_version, retry_lost_races};
use agilepm_platform::storage::outbox;
use agilepm_platform::storage::ranked::Anchor;
use uuid::Uuid;

use super::domain::{self, State, UseCase};
use super::events;
use super::store::{self, USE_CASES};
use crate::peers::Peers;

/// A new use case as a (checked) create request describes it.
#[derive(Debug, Clone)]
pub struct NewUseCase {
    /// The request's idempotency key.
    pub request_id: String,
    /// Product.
    pub product_id: String,
    /// Title.
    pub title: String,
    /// Why it matters.
    pub value_statement: String,
}

/// What a command does to a use case.
#[derive(Debug, Clone)]
pub enum Change {
    /// Changes fields.
    Fields(Vec<domain::Change>),
    /// Moves it directly before (`before`) or after another use case of its product.
    Rank {
        /// The use case it moves next to.
        anchor_id: String,
        /// Before the anchor (true) or after it.
        before: bool,
    },
    /// Takes it out of scope.
    Retire,
}

/// Creates `new` at the end of its product's use cases, or returns the use case an
/// earlier create with the same request id made. The backlog-item service records it
/// before it commits here, so items can name it as soon as it is acknowledged.
pub async fn create(db: &Db, peers: &Peers, tenant: &str, new: NewUseCase) -> AppResult<UseCase> {
    for _ in 0..optimistic::MAX_ATTEMPTS {
        let mut uow = db.begin().await?;
        if let Some(existing) = store::by_request_id(uow.conn(), tenant, &new.request_id).await? {
            return Ok(existing);
        }
        crate::product::store::require(uow.conn(), tenant, "use_case.product_id", &new.product_id)
            .await?;
        let rank = USE_CASES
            .key_at_end(uow.conn(), tenant, &new.product_id)
            .await?;
        let now = now_micros();
        let use_case = UseCase {
            id: Uuid::now_v7().to_string(),
            tenant_id: tenant.to_owned(),
            product_id: new.product_id.clone(),
            title: new.title.clone(),
            value_statement: new.value_statement.clone(),
            rank,
            state: State::Active,
            version: 1,
            create_time_us: now,
            update_time_us: now,
        };
        match store::insert(&mut uow, &use_case, &new.request_id).await {
            Ok(()) => {}
            // The same request id (answered on the next pass) or rank (recomputed).
            Err(AppError::AlreadyExists(_)) => continue,
            Err(other) => return Err(other),
        }
        outbox::append_all(&mut uow, &[events::created(&use_case)]).await?;
        peers
            .record_use_cases(tenant, &[super::mapping::facts(&use_case)])
            .await?;
        uow.commit().await?;
        return Ok(use_case);
    }
    Err(AppError::Aborted(
        "the product's use cases are being changed by many writers; retry".into(),
    ))
}

/// Applies `change` to use case `id` (compare-and-set), emitting `UseCaseUpdated`.
pub async fn change(
    db: &Db,
    tenant: &str,
    id: &str,
    expected: Option<i64>,
    change: &Change,
) -> AppResult<UseCase> {
    let what = format!("use case {id}");
    retry_lost_races(&what, expected, || async {
        let mut uow = db.begin().await?;
        let before = store::get(uow.conn(), tenant, id)
            .await?
            .ok_or_else(|| AppError::not_found(&what))?;
        check_version(&what, expected, before.version)?;
        let mut after = match change {
            Change::Fields(changes) => domain::update(&before, changes),
            Change::Retire => domain::retire(&before),
            Change::Rank {
                anchor_id,
                before: to_before,
            } => {
                let anchor = store::get(uow.conn(), tenant, anchor_id)
                    .await?
                    .ok_or_else(|| AppError::not_found(format!("use case {anchor_id}")))?;
                if anchor.product_id != before.product_id {
                    return Err(AppError::precondition(
                        "use cases can only be ranked within their own product",
                    ));
                }
                let place = Anchor {
                    id: anchor_id,
                    rank: &anchor.rank,
                    before: *to_before,
                };
                let rank = USE_CASES
                    .key_next_to(
                        uow.conn(),
                        tenant,
                        &before.product_id,
                        (&before.id, &before.rank),
                        place,
                    )
                    .await?;
                UseCase {
                    rank,
                    ..before.clone()
                }
            }
        };
        if after == before {
            return Ok(Attempt::Done(before));
        }
        after.version = before.version + 1;
        after.update_time_us = now_micros();
        match store::update(&mut uow, &after, before.version).await {
            Ok(true) => {}
            // Lost the version race, or another move took the same rank key.
            Ok(false) | Err(AppError::AlreadyExists(_)) => return Ok(Attempt::LostRace),
            Err(other) => return Err(other),
        }
        outbox::append_all(&mut uow, &[events::updated(&after)]).await?;
        uow.commit().await?;
        Ok(Attempt::Done(after))
    })
    .await
}
