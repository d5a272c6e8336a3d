//! The backlog-item events that both the commands (`api.rs`) and the coordinator's
//! reconciles (`reconciles.rs`) emit, built once. (The commands' other events are still
//! built in `api.rs`; they move here with the service's split into the common layout.)

use agilepm_platform::outbox::Subject;
use agilepm_proto::backlog::v1::{BacklogItem, BacklogItemStatusChanged, StatusChangeCause};

use crate::domain::TaskBasis;

/// Where an item's events go in the outbox.
pub fn subject(item: &BacklogItem) -> Subject<'_> {
    Subject {
        aggregate_type: "BacklogItem",
        aggregate_id: &item.id,
        tenant_id: &item.tenant_id,
    }
}

/// The item's status (or its awaiting acceptance) changed from `before` to `after`, by a
/// command or by reconciling `basis`.
pub fn status_changed(
    before: &BacklogItem,
    after: &BacklogItem,
    cause: StatusChangeCause,
    basis: Option<TaskBasis>,
) -> BacklogItemStatusChanged {
    BacklogItemStatusChanged {
        backlog_item_id: after.id.clone(),
        tenant_id: after.tenant_id.clone(),
        product_id: after.product_id.clone(),
        old_status: before.status,
        new_status: after.status,
        cause: cause as i32,
        task_revision: basis.map_or(0, |b| b.revision),
        task_hours_remaining: basis.map_or(0, |b| b.hours),
        awaiting_acceptance: after.awaiting_acceptance,
    }
}
