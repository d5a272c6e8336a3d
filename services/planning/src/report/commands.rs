//! The reads reports are composed of: the sprint from this service's store, its items
//! from the backlog-item service and their hours from the task service.

use agilepm_platform::domain::error::{AppError, AppResult, from_peer};
use agilepm_platform::domain::team_zone::TeamZone;
use agilepm_platform::storage::db::Db;
use agilepm_platform::wire::auth::act_for;
use agilepm_proto::task::v1::GetBurndownRequest;

use super::domain::{self, BurndownDay};
use crate::peers::Peers;
use crate::sprint::domain::Sprint;
use crate::sprint::store as sprints;
use crate::team::store as team;

/// A sprint's burndown, with the team zone its days were decided in.
pub struct SprintBurndown {
    /// One entry per day of the sprint.
    pub days: Vec<BurndownDay>,
    /// The team's zone.
    pub zone: TeamZone,
}

/// The burndown of sprint `id`: the hours of the items committed to it, each of the
/// team's days.
pub async fn sprint_burndown(
    db: &Db,
    peers: &Peers,
    tenant: &str,
    id: &str,
) -> AppResult<SprintBurndown> {
    let (sprint, zone) = {
        let mut conn = db.pool().acquire().await?;
        let sprint = sprints::get(&mut conn, tenant, id)
            .await?
            .ok_or_else(|| AppError::not_found(format!("sprint {id}")))?;
        (sprint, team::settings(&mut conn, tenant).await?.time_zone)
    };
    // Membership over time, from the backlog-item service's history: an item counts on
    // the days it was committed (even if uncommitted later), and not from its removal on;
    // the days are the team's: an item committed at 17:00 in UTC-8 counts from that day.
    let memberships: Vec<domain::Membership> = peers
        .sprint_memberships(tenant, id)
        .await?
        .into_iter()
        .map(|(item, commit_us, leave_us)| domain::Membership {
            item,
            first_day: zone.day_of(commit_us),
            left_day: leave_us.map(|us| zone.day_of(us)),
        })
        .collect();
    let mut items: Vec<String> = memberships.iter().map(|m| m.item.clone()).collect();
    items.sort_unstable();
    items.dedup();
    let day_count = (sprint.end_date - sprint.begin_date).num_days() as usize + 1;
    let days = if items.is_empty() {
        domain::empty_days(sprint.begin_date, sprint.end_date)
    } else {
        let request = GetBurndownRequest {
            backlog_item_ids: items,
            start_date: sprint.begin_date.to_string(),
            end_date: sprint.end_date.to_string(),
            per_item: true,
        };
        let response = peers
            .tasks
            .clone()
            .get_burndown(act_for(tenant, request))
            .await
            .map_err(|s| from_peer("task service", s))?;
        let item_hours: Vec<(String, Vec<i64>)> = response
            .into_inner()
            .items
            .into_iter()
            .map(|i| (i.backlog_item_id, i.hours_remaining))
            .collect();
        domain::member_hours(sprint.begin_date, day_count, &item_hours, &memberships)
    };
    Ok(SprintBurndown {
        days: domain::burndown(days),
        zone,
    })
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
