//! Between the domain (`domain::BacklogItem` and its enums) and the protobuf messages:
//! the item as responses and events carry it, and the enum values and ratings requests
//! send, checked on the way in.

use agilepm_platform::domain::error::{AppError, AppResult};
use agilepm_platform::domain::time::timestamp;
use agilepm_proto::backlog::v1 as proto;

use crate::domain::{
    self, BacklogItem, ItemType, SprintMembership, Status, StoryPoints, TransitionMode,
};

/// A sprint membership as ListSprintMemberships answers it.
pub fn membership_message(membership: &SprintMembership) -> proto::SprintMembership {
    proto::SprintMembership {
        backlog_item_id: membership.backlog_item_id.clone(),
        commit_time: Some(timestamp(membership.commit_time_us)),
        leave_time: membership.leave_time_us.map(timestamp),
    }
}

/// `item` as responses and events carry it.
pub fn item_message(item: &BacklogItem) -> proto::BacklogItem {
    proto::BacklogItem {
        id: item.id.clone(),
        tenant_id: item.tenant_id.clone(),
        product_id: item.product_id.clone(),
        summary: item.summary.clone(),
        story: item.story.clone(),
        category: item.category.clone(),
        r#type: item.item_type.number(),
        story_points: item.story_points.number(),
        business_priority: item.business_priority.map(priority_message),
        priority_score: item.priority_score(),
        use_case_id: item.use_case_id.clone(),
        release_id: item.placement.release_id.clone(),
        sprint_id: item.placement.sprint_id.clone(),
        status: item.placement.status.number(),
        rank: item.rank.clone(),
        sprint_rank: item.sprint_rank.clone(),
        derived_from_ids: item.derived_from_ids.clone(),
        awaiting_acceptance: item.placement.awaiting_acceptance,
        version: item.version,
        create_time: Some(timestamp(item.create_time_us)),
        update_time: Some(timestamp(item.update_time_us)),
        reconciled_task_revision: item.tasks.revision,
        task_hours_remaining: item.tasks.hours,
        task_count: item.tasks.count,
    }
}

/// Ratings as messages carry them.
pub fn priority_message(p: domain::BusinessPriority) -> proto::BusinessPriority {
    proto::BusinessPriority {
        benefit: p.benefit,
        penalty: p.penalty,
        cost: p.cost,
        risk: p.risk,
    }
}

/// A request's ratings in `field`: each 1 to 9, or none at all.
pub fn business_priority(
    field: &str,
    value: Option<&proto::BusinessPriority>,
) -> AppResult<Option<domain::BusinessPriority>> {
    value
        .map(|p| {
            let ratings = domain::BusinessPriority {
                benefit: p.benefit,
                penalty: p.penalty,
                cost: p.cost,
                risk: p.risk,
            };
            domain::business_priority(field, ratings)
        })
        .transpose()
}

/// A request's item type in `field`; unset means FEATURE.
pub fn item_type(field: &str, value: i32) -> AppResult<ItemType> {
    match value {
        0 => Ok(ItemType::Feature),
        _ => ItemType::try_from(value)
            .map_err(|_| AppError::invalid(field, format!("unknown type {value}"))),
    }
}

/// A request's story points in `field`; unset means not sized.
pub fn story_points(field: &str, value: i32) -> AppResult<StoryPoints> {
    StoryPoints::try_from(value)
        .map_err(|_| AppError::invalid(field, format!("unknown story points value {value}")))
}

/// A request's status filter value in `field` (unset is no status).
pub fn status(field: &str, value: i32) -> AppResult<Status> {
    Status::try_from(value).map_err(|_| AppError::invalid(field, format!("unknown status {value}")))
}

/// A product fact's transition mode in `field`; unset means AUTOMATIC.
pub fn transition_mode(field: &str, value: i32) -> AppResult<TransitionMode> {
    match value {
        0 => Ok(TransitionMode::Automatic),
        _ => TransitionMode::try_from(value).map_err(|_| AppError::invalid(field, "unknown mode")),
    }
}
