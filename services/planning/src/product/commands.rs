//! The Product aggregate's units of work. A product's existence and transition mode are
//! recorded in the backlog-item service before the change commits here, so an
//! acknowledged product (or mode switch) is what every later reconciliation applies.

use agilepm_platform::domain::error::{AppError, AppResult};
use agilepm_platform::domain::time::now_micros;
use agilepm_platform::storage::db::{Db, UnitOfWork};
use agilepm_platform::storage::optimistic::{Attempt, check_version, retry_lost_races};
use agilepm_platform::storage::outbox;
use uuid::Uuid;

use super::domain::{self, Change, Product, TransitionMode};
use super::{events, mapping, store};
use crate::peers::Peers;

/// A new product as a (checked) create request describes it.
#[derive(Debug, Clone)]
pub struct NewProduct {
    /// The request's idempotency key.
    pub request_id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Product owner, empty if none.
    pub product_owner_id: String,
    /// How its finished items move.
    pub transition_mode: TransitionMode,
}

/// Creates `new`, or returns the product an earlier create with the same request id
/// made.
pub async fn create(db: &Db, peers: &Peers, tenant: &str, new: NewProduct) -> AppResult<Product> {
    let now = now_micros();
    let product = Product {
        id: Uuid::now_v7().to_string(),
        tenant_id: tenant.to_owned(),
        name: new.name,
        description: new.description,
        product_owner_id: new.product_owner_id,
        transition_mode: new.transition_mode,
        version: 1,
        create_time_us: now,
        update_time_us: now,
    };
    let mut uow = db.begin().await?;
    if let Some(existing) = store::by_request_id(uow.conn(), tenant, &new.request_id).await? {
        return Ok(existing);
    }
    check_owner(&mut uow, &product).await?;
    store::insert(&mut uow, &product, &new.request_id)
        .await
        .map_err(|error| match error {
            AppError::AlreadyExists(_) => AppError::AlreadyExists(format!(
                "a product named {:?} exists already",
                product.name
            )),
            other => other,
        })?;
    outbox::append_all(&mut uow, &[events::created(&product)]).await?;
    // Recorded in backlog-item before the product is acknowledged: items can be planned
    // for it as soon as the caller knows its id. If backlog-item is down, the product is
    // not created (UNAVAILABLE) rather than half-created.
    peers
        .record_products(tenant, &[mapping::facts(&product)])
        .await?;
    uow.commit().await?;
    Ok(product)
}

/// Applies `changes` to product `id` (compare-and-set on its version) with their events.
pub async fn update(
    db: &Db,
    peers: &Peers,
    tenant: &str,
    id: &str,
    expected: Option<i64>,
    changes: &[Change],
) -> AppResult<Product> {
    let what = format!("product {id}");
    retry_lost_races(&what, expected, || async {
        let mut uow = db.begin().await?;
        let before = store::get(uow.conn(), tenant, id)
            .await?
            .ok_or_else(|| AppError::not_found(&what))?;
        check_version(&what, expected, before.version)?;
        let mut after = domain::update(&before, changes);
        if after == before {
            return Ok(Attempt::Done(before));
        }
        if after.product_owner_id != before.product_owner_id {
            check_owner(&mut uow, &after).await?;
        }
        after.version += 1;
        after.update_time_us = now_micros();
        if !store::update(&mut uow, &after, before.version).await? {
            return Ok(Attempt::LostRace);
        }
        outbox::append_all(&mut uow, &events::changed(&before, &after)).await?;
        if after.transition_mode != before.transition_mode {
            // The switch is recorded where reconciliation reads it before it is
            // acknowledged: every estimate after this call returns honours it.
            peers
                .record_products(tenant, &[mapping::facts(&after)])
                .await?;
        }
        uow.commit().await?;
        Ok(Attempt::Done(after))
    })
    .await
}

/// A product's owner (if it names one) is an enabled member of the tenant's team holding
/// the product-owner role; read in the product's transaction.
async fn check_owner(uow: &mut UnitOfWork, product: &Product) -> AppResult<()> {
    let owner = &product.product_owner_id;
    if owner.is_empty() {
        return Ok(());
    }
    let member = crate::team::store::get(uow.conn(), &product.tenant_id, owner).await?;
    crate::team::domain::product_owner("product.product_owner_id", owner, member.as_ref())
}
