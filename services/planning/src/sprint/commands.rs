//! The Sprint aggregate's units of work: load, decide with `domain`, save with the
//! event of `events`, in one transaction; and the commitments, which the backlog-item
//! service records on the item.

use agilepm_platform::domain::error::{AppError, AppResult};
use agilepm_platform::domain::time::now_micros;
use agilepm_platform::storage::db::Db;
use agilepm_platform::storage::outbox;
use agilepm_platform::wire::auth::act_for;
use agilepm_proto::backlog::v1::{
    BacklogItem, CommitBacklogItemRequest, ListBacklogItemsRequest, UncommitBacklogItemRequest,
};
use chrono::NaiveDate;
use uuid::Uuid;

use super::domain::{self, Sprint, State};
use super::{events, mapping, store};
use crate::peers::{Peers, backlog_error};
use crate::versioned;

/// A new sprint as a (checked) schedule request describes it.
#[derive(Debug, Clone)]
pub struct NewSprint {
    /// The request's idempotency key.
    pub request_id: String,
    /// Product.
    pub product_id: String,
    /// Name.
    pub name: String,
    /// Goal.
    pub goal: String,
    /// First day.
    pub begin_date: NaiveDate,
    /// Last day.
    pub end_date: NaiveDate,
}

/// Schedules `new` for an existing product, or returns the sprint an earlier schedule
/// with the same request id created.
pub async fn schedule(db: &Db, tenant: &str, new: NewSprint) -> AppResult<Sprint> {
    let mut uow = db.begin().await?;
    if let Some(existing) = store::by_request_id(uow.conn(), tenant, &new.request_id).await? {
        return Ok(existing);
    }
    crate::product::store::require(uow.conn(), tenant, "sprint.product_id", &new.product_id)
        .await?;
    let sprint = Sprint {
        id: Uuid::now_v7().to_string(),
        tenant_id: tenant.to_owned(),
        product_id: new.product_id,
        name: new.name,
        goal: new.goal,
        begin_date: new.begin_date,
        end_date: new.end_date,
        retrospective: String::new(),
        state: State::Planned,
        summary: None,
        version: 1,
        create_time_us: now_micros(),
    };
    store::insert(&mut uow, &sprint, &new.request_id).await?;
    outbox::append_all(&mut uow, &[events::scheduled(&sprint)]).await?;
    uow.commit().await?;
    Ok(sprint)
}

/// Completes the ACTIVE sprint `id`, summarising the items the backlog-item service
/// lists as committed to it.
pub async fn complete(
    db: &Db,
    peers: &Peers,
    tenant: &str,
    id: &str,
    expected: Option<i64>,
) -> AppResult<Sprint> {
    let current = existing(db, tenant, id).await?;
    domain::may_complete(&current)?;
    let filter = ListBacklogItemsRequest {
        product_id: current.product_id.clone(),
        sprint_id: id.to_owned(),
        ..Default::default()
    };
    let items = peers.all_backlog_items(tenant, filter).await?;
    let committed: Vec<_> = items.iter().map(mapping::committed_item).collect();
    let summary = domain::summarize(&committed, now_micros());
    versioned::change(
        db,
        tenant,
        id,
        expected,
        |before| domain::complete(before, &summary),
        events::completed,
    )
    .await
}

/// Commits item `item_id` of the sprint's product to sprint `sprint_id` (not COMPLETED).
pub async fn commit_item(
    db: &Db,
    peers: &Peers,
    tenant: &str,
    sprint_id: &str,
    item_id: &str,
    expected_version: Option<i64>,
) -> AppResult<Option<BacklogItem>> {
    let sprint = existing(db, tenant, sprint_id).await?;
    domain::accepts_commitments(&sprint)?;
    peers
        .backlog_item_of(
            tenant,
            item_id,
            &sprint.product_id,
            &format!("sprint {sprint_id}"),
        )
        .await?;
    let request = CommitBacklogItemRequest {
        id: item_id.to_owned(),
        sprint_id: sprint_id.to_owned(),
        expected_version,
    };
    let response = peers
        .backlog_items
        .clone()
        .commit_backlog_item(act_for(tenant, request))
        .await
        .map_err(backlog_error)?;
    Ok(response.into_inner().backlog_item)
}

/// Uncommits item `item_id` from its sprint.
pub async fn uncommit_item(
    peers: &Peers,
    tenant: &str,
    item_id: &str,
    expected_version: Option<i64>,
) -> AppResult<Option<BacklogItem>> {
    let request = UncommitBacklogItemRequest {
        id: item_id.to_owned(),
        expected_version,
    };
    let response = peers
        .backlog_items
        .clone()
        .uncommit_backlog_item(act_for(tenant, request))
        .await
        .map_err(backlog_error)?;
    Ok(response.into_inner().backlog_item)
}

/// The sprint `id` of `tenant`, which must exist.
async fn existing(db: &Db, tenant: &str, id: &str) -> AppResult<Sprint> {
    let mut conn = db.pool().acquire().await?;
    store::get(&mut conn, tenant, id)
        .await?
        .ok_or_else(|| AppError::not_found(format!("sprint {id}")))
}
