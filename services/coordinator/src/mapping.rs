//! Between the coordinator's domain and the protobuf messages it sends and answers.

use agilepm_platform::domain::time::timestamp;
use agilepm_proto::backlog::v1::ReconcileBacklogItemStatusRequest;
use agilepm_proto::coordinator::v1 as proto;
use agilepm_proto::task::v1::BacklogItemTaskTotals;

use crate::domain::{ParkedItem, PoisonEvent, Totals};

/// Totals as the task service sends them.
pub fn totals(message: &BacklogItemTaskTotals) -> Totals {
    Totals {
        hours: message.hours_remaining,
        count: message.task_count,
        revision: message.revision,
    }
}

/// The reconcile of item `id` from `totals`. The product's transition mode is not ours
/// to send: the backlog-item service applies the one the planning service recorded.
pub fn basis(id: &str, totals: Totals) -> ReconcileBacklogItemStatusRequest {
    ReconcileBacklogItemStatusRequest {
        id: id.to_owned(),
        task_hours_remaining: totals.hours,
        task_count: totals.count,
        task_revision: totals.revision,
        transition_mode: 0,
    }
}

/// A poison event as operators see it.
pub fn poison_message(event: &PoisonEvent) -> proto::PoisonEvent {
    proto::PoisonEvent {
        event_id: event.event_id.clone(),
        position: event.position.clone(),
        backlog_item_id: event.backlog_item_id.clone(),
        tenant_id: event.tenant_id.clone(),
        error: event.error.clone(),
        record_time: Some(timestamp(event.record_time_us)),
    }
}

/// A parked item as operators see it.
pub fn parked_message(item: &ParkedItem) -> proto::ParkedItem {
    proto::ParkedItem {
        tenant_id: item.tenant_id.clone(),
        backlog_item_id: item.backlog_item_id.clone(),
        error: item.error.clone(),
        events: item.events,
        park_time: Some(timestamp(item.park_time_us)),
    }
}
