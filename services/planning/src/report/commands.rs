//! The reads reports are composed of: the sprint from this service's store, its items
//! from the backlog-item service and their hours from the task service.

use agilepm_platform::domain::error::{AppError, AppResult, from_peer};
use agilepm_platform::storage::db::Db;
use agilepm_platform::wire::auth::act_for;
use agilepm_proto::backlog::v1::ListBacklogItemsRequest;
use agilepm_proto::task::v1::GetBurndownRequest;

use super::domain::{self, BurndownDay};
use crate::peers::Peers;
use crate::sprint::domain::Sprint;
use crate::sprint::store as sprints;

/// The burndown of sprint `id`: the hours of the items committed to it, each day.
pub async fn sprint_burndown(
    db: &Db,
    peers: &Peers,
    tenant: &str,
    id: &str,
) -> AppResult<Vec<BurndownDay>> {
    let sprint = {
        let mut conn = db.pool().acquire().await?;
        sprints::get(&mut conn, tenant, id)
            .await?
            .ok_or_else(|| AppError::not_found(format!("sprint {id}")))?
    };
    // Membership lives on the items: the ones committed to the sprint now (DONE ones
    // keep their sprint id).
    let filter = ListBacklogItemsRequest {
        product_id: sprint.product_id.clone(),
        sprint_id: id.to_owned(),
        ..Default::default()
    };
    let items = peers.all_backlog_items(tenant, filter).await?;
    let days = if items.is_empty() {
        domain::empty_days(sprint.begin_date, sprint.end_date)
    } else {
        let request = GetBurndownRequest {
            backlog_item_ids: items.iter().map(|i| i.id.clone()).collect(),
            start_date: sprint.begin_date.to_string(),
            end_date: sprint.end_date.to_string(),
        };
        let response = peers
            .tasks
            .clone()
            .get_burndown(act_for(tenant, request))
            .await
            .map_err(|s| from_peer("task service", s))?;
        response
            .into_inner()
            .days
            .into_iter()
            .map(|d| (d.date, d.hours_remaining))
            .collect()
    };
    Ok(domain::burndown(days))
}

/// The product's last `count` completed sprints, most recent first.
pub async fn completed_sprints(
    db: &Db,
    tenant: &str,
    product_id: &str,
    count: u32,
) -> AppResult<Vec<Sprint>> {
    let mut conn = db.pool().acquire().await?;
    sprints::completed(&mut conn, tenant, product_id, count).await
}
