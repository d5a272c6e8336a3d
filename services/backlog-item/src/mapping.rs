//! Between the stored item (the protobuf `BacklogItem`) and the status machine's view of
//! it (`domain::Placement`).

use agilepm_proto::backlog::v1::{BacklogItem, BacklogItemStatus};

use crate::domain::Placement;

/// The status machine's view of `item`.
pub fn placement(item: &BacklogItem) -> Placement {
    Placement {
        // Stored statuses are checked as they are read (`store`), so the fallback is only
        // for an item built in memory with an unknown number.
        status: BacklogItemStatus::try_from(item.status).unwrap_or(BacklogItemStatus::Unspecified),
        release_id: item.release_id.clone(),
        sprint_id: item.sprint_id.clone(),
        awaiting_acceptance: item.awaiting_acceptance,
    }
}

/// `item` with `placement` applied.
pub fn place(item: &BacklogItem, placement: &Placement) -> BacklogItem {
    BacklogItem {
        status: placement.status as i32,
        release_id: placement.release_id.clone(),
        sprint_id: placement.sprint_id.clone(),
        awaiting_acceptance: placement.awaiting_acceptance,
        ..item.clone()
    }
}
