//! The events the coordinator follows (it emits none), decoded here and nowhere else.

use agilepm_proto::EventType;
use agilepm_proto::events::v1::Event;
use agilepm_proto::task::v1::{TaskDefined, TaskHoursRemainingEstimated, TaskRemoved};
use prost::Message as _;

use crate::domain::FollowedEvent;
use crate::mapping::totals;

/// The task events that change an item's hour totals.
pub fn followed_event_types() -> Vec<String> {
    vec![
        TaskDefined::EVENT_TYPE.into(),
        TaskHoursRemainingEstimated::EVENT_TYPE.into(),
        TaskRemoved::EVENT_TYPE.into(),
    ]
}

/// The backlog item a followed task event is about and the item's totals the event
/// carries (as committed with it); `None` if it does not decode.
pub fn followed(event: &Event) -> Option<FollowedEvent> {
    let bytes = event.payload.as_ref()?.value.as_slice();
    let (backlog_item_id, carried) = match event.event_type.as_str() {
        t if t == TaskDefined::EVENT_TYPE => {
            let defined = TaskDefined::decode(bytes).ok()?;
            (defined.task?.backlog_item_id, defined.totals)
        }
        t if t == TaskHoursRemainingEstimated::EVENT_TYPE => {
            let estimated = TaskHoursRemainingEstimated::decode(bytes).ok()?;
            (estimated.backlog_item_id, estimated.totals)
        }
        t if t == TaskRemoved::EVENT_TYPE => {
            let removed = TaskRemoved::decode(bytes).ok()?;
            (removed.backlog_item_id, removed.totals)
        }
        _ => return None,
    };
    Some(FollowedEvent {
        event_id: event.event_id.clone(),
        position: event.position.clone(),
        tenant: event.tenant_id.clone(),
        backlog_item_id,
        totals: carried.as_ref().map(totals),
    })
}
