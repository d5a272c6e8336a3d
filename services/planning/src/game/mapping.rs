//! From the backlog-item service's messages to what the game's rules read, and the
//! game's places to move requests.

use agilepm_proto::backlog::v1::{BacklogItem, BacklogItemStatus, move_backlog_item_request};

use super::domain::{ItemStatus, Place};

/// How far `item` has come.
pub fn item_status(item: &BacklogItem) -> ItemStatus {
    match BacklogItemStatus::try_from(item.status) {
        Ok(BacklogItemStatus::Planned | BacklogItemStatus::Scheduled) => ItemStatus::Open,
        Ok(BacklogItemStatus::Removed) => ItemStatus::Removed,
        _ => ItemStatus::Settled,
    }
}

/// `place` as a move request's anchor (none: the item stays).
pub fn anchor(place: Place) -> Option<move_backlog_item_request::Anchor> {
    match place {
        Place::After(id) => Some(move_backlog_item_request::Anchor::AfterId(id)),
        Place::Before(id) => Some(move_backlog_item_request::Anchor::BeforeId(id)),
        Place::Stay => None,
    }
}
