//! The Release aggregate's units of work, and scheduling items for a release, which the
//! backlog-item service records on the item.

use agilepm_platform::domain::error::{AppError, AppResult};
use agilepm_platform::domain::time::now_micros;
use agilepm_platform::storage::db::Db;
use agilepm_platform::storage::outbox;
use agilepm_platform::wire::auth::act_for;
use agilepm_proto::backlog::v1::{
    BacklogItem, ScheduleBacklogItemRequest, UnscheduleBacklogItemRequest,
};
use chrono::NaiveDate;
use uuid::Uuid;

use super::domain::Release;
use super::{events, store};
use crate::peers::{Peers, backlog_error};

/// A new release as a (checked) schedule request describes it.
#[derive(Debug, Clone)]
pub struct NewRelease {
    /// The request's idempotency key.
    pub request_id: String,
    /// Product.
    pub product_id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// First day.
    pub begin_date: NaiveDate,
    /// Last day.
    pub end_date: NaiveDate,
}

/// Schedules `new` for an existing product, or returns the release an earlier schedule
/// with the same request id created.
pub async fn schedule(db: &Db, tenant: &str, new: NewRelease) -> AppResult<Release> {
    let mut uow = db.begin().await?;
    if let Some(existing) = store::by_request_id(uow.conn(), tenant, &new.request_id).await? {
        return Ok(existing);
    }
    crate::product::store::require(uow.conn(), tenant, "release.product_id", &new.product_id)
        .await?;
    let now = now_micros();
    let release = Release {
        id: Uuid::now_v7().to_string(),
        tenant_id: tenant.to_owned(),
        product_id: new.product_id,
        name: new.name,
        description: new.description,
        begin_date: new.begin_date,
        end_date: new.end_date,
        version: 1,
        create_time_us: now,
        update_time_us: now,
        archive_time_us: None,
    };
    store::insert(&mut uow, &release, &new.request_id).await?;
    outbox::append_all(&mut uow, &[events::scheduled(&release)]).await?;
    uow.commit().await?;
    Ok(release)
}

/// Schedules item `item_id` of the release's product for release `release_id`.
pub async fn schedule_item(
    db: &Db,
    peers: &Peers,
    tenant: &str,
    release_id: &str,
    item_id: &str,
    expected_version: Option<i64>,
) -> AppResult<Option<BacklogItem>> {
    let mut conn = db.pool().acquire().await?;
    let release = store::get(&mut conn, tenant, release_id)
        .await?
        .ok_or_else(|| AppError::not_found(format!("release {release_id}")))?;
    drop(conn);
    release.require_in_planning("scheduling items for it")?;
    peers
        .backlog_item_of(
            tenant,
            item_id,
            &release.product_id,
            &format!("release {release_id}"),
        )
        .await?;
    let request = ScheduleBacklogItemRequest {
        id: item_id.to_owned(),
        release_id: release_id.to_owned(),
        expected_version,
    };
    let response = peers
        .backlog_items
        .clone()
        .schedule_backlog_item(act_for(tenant, request))
        .await
        .map_err(backlog_error)?;
    Ok(response.into_inner().backlog_item)
}

/// Unschedules item `item_id` from its release.
pub async fn unschedule_item(
    peers: &Peers,
    tenant: &str,
    item_id: &str,
    expected_version: Option<i64>,
) -> AppResult<Option<BacklogItem>> {
    let request = UnscheduleBacklogItemRequest {
        id: item_id.to_owned(),
        expected_version,
    };
    let response = peers
        .backlog_items
        .clone()
        .unschedule_backlog_item(act_for(tenant, request))
        .await
        .map_err(backlog_error)?;
    Ok(response.into_inner().backlog_item)
}
