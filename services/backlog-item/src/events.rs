//! Every event of the backlog-item service, built once: from an item's state before and
//! after a change, whoever made it (a command in `commands.rs`, a reconcile in
//! `commands/reconcile_batch.rs`).

use agilepm_platform::storage::outbox::{NewEvent, Subject};
use agilepm_proto::backlog::v1::*;

use crate::domain::{BacklogItem, Status, TaskBasis};
use crate::mapping::{item_message, priority_message};

/// Where an item's events go in the outbox.
pub fn subject(item: &BacklogItem) -> Subject<'_> {
    Subject {
        aggregate_type: "BacklogItem",
        aggregate_id: &item.id,
        tenant_id: &item.tenant_id,
    }
}

/// `item` was planned.
pub fn planned(item: &BacklogItem) -> NewEvent<'_> {
    let event = BacklogItemPlanned {
        backlog_item: Some(item_message(item)),
    };
    NewEvent::of(subject(item), &event)
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
        old_status: before.placement.status.number(),
        new_status: after.placement.status.number(),
        cause: cause as i32,
        task_revision: basis.map_or(0, |b| b.revision),
        task_hours_remaining: basis.map_or(0, |b| b.hours),
        awaiting_acceptance: after.placement.awaiting_acceptance,
    }
}

/// The events a command's change of an item from `before` to `after` implies, in the
/// order subscribers see them: story fields, rank, sprint rank, then placement and status.
pub fn changed<'a>(before: &BacklogItem, after: &'a BacklogItem) -> Vec<NewEvent<'a>> {
    let mut events = Vec::new();
    field_events(before, after, &mut events);
    if before.rank != after.rank {
        let event = BacklogItemRanked {
            backlog_item_id: after.id.clone(),
            tenant_id: after.tenant_id.clone(),
            product_id: after.product_id.clone(),
            rank: after.rank.clone(),
        };
        events.push(NewEvent::of(subject(after), &event));
    }
    let same_sprint = before.placement.sprint_id == after.placement.sprint_id;
    if same_sprint && before.sprint_rank != after.sprint_rank {
        let event = BacklogItemRankedInSprint {
            backlog_item_id: after.id.clone(),
            tenant_id: after.tenant_id.clone(),
            sprint_id: after.placement.sprint_id.clone(),
            sprint_rank: after.sprint_rank.clone(),
        };
        events.push(NewEvent::of(subject(after), &event));
    }
    placement_events(before, after, &mut events);
    events
}

/// One event per changed story field.
fn field_events<'a>(before: &BacklogItem, after: &'a BacklogItem, events: &mut Vec<NewEvent<'a>>) {
    let (id, tenant) = (after.id.clone(), after.tenant_id.clone());
    let mut push = |event: NewEvent<'a>| events.push(event);
    let about = subject(after);
    if before.summary != after.summary {
        let event = BacklogItemSummarized {
            backlog_item_id: id.clone(),
            tenant_id: tenant.clone(),
            summary: after.summary.clone(),
        };
        push(NewEvent::of(about, &event));
    }
    if before.story != after.story {
        let event = BacklogItemStoryTold {
            backlog_item_id: id.clone(),
            tenant_id: tenant.clone(),
            story: after.story.clone(),
        };
        push(NewEvent::of(about, &event));
    }
    if before.category != after.category {
        let event = BacklogItemCategoryChanged {
            backlog_item_id: id.clone(),
            tenant_id: tenant.clone(),
            category: after.category.clone(),
        };
        push(NewEvent::of(about, &event));
    }
    if before.item_type != after.item_type {
        let event = BacklogItemTypeChanged {
            backlog_item_id: id.clone(),
            tenant_id: tenant.clone(),
            r#type: after.item_type.number(),
        };
        push(NewEvent::of(about, &event));
    }
    if before.story_points != after.story_points {
        let event = BacklogItemStoryPointsAssigned {
            backlog_item_id: id.clone(),
            tenant_id: tenant.clone(),
            story_points: after.story_points.number(),
        };
        push(NewEvent::of(about, &event));
    }
    if before.business_priority != after.business_priority {
        let event = BacklogItemBusinessPriorityAssigned {
            backlog_item_id: id.clone(),
            tenant_id: tenant.clone(),
            business_priority: after.business_priority.map(priority_message),
            priority_score: after.priority_score(),
        };
        push(NewEvent::of(about, &event));
    }
    if before.use_case_id != after.use_case_id {
        let event = BacklogItemUseCaseChanged {
            backlog_item_id: id,
            tenant_id: tenant,
            use_case_id: after.use_case_id.clone(),
        };
        push(NewEvent::of(about, &event));
    }
}

/// Leaving the old sprint and release before joining the new ones, then removal, then
/// the status change.
fn placement_events<'a>(
    before: &BacklogItem,
    after: &'a BacklogItem,
    events: &mut Vec<NewEvent<'a>>,
) {
    let (was, is) = (&before.placement, &after.placement);
    let (id, tenant, product) = (&after.id, &after.tenant_id, &after.product_id);
    let about = subject(after);
    if was.sprint_id != is.sprint_id && !was.sprint_id.is_empty() {
        let event = BacklogItemUncommitted {
            backlog_item_id: id.clone(),
            tenant_id: tenant.clone(),
            product_id: product.clone(),
            sprint_id: was.sprint_id.clone(),
        };
        events.push(NewEvent::of(about, &event));
    }
    if was.release_id != is.release_id && !was.release_id.is_empty() {
        let event = BacklogItemUnscheduled {
            backlog_item_id: id.clone(),
            tenant_id: tenant.clone(),
            product_id: product.clone(),
            release_id: was.release_id.clone(),
        };
        events.push(NewEvent::of(about, &event));
    }
    if was.release_id != is.release_id && !is.release_id.is_empty() {
        let event = BacklogItemScheduled {
            backlog_item_id: id.clone(),
            tenant_id: tenant.clone(),
            product_id: product.clone(),
            release_id: is.release_id.clone(),
        };
        events.push(NewEvent::of(about, &event));
    }
    if was.sprint_id != is.sprint_id && !is.sprint_id.is_empty() {
        let event = BacklogItemCommitted {
            backlog_item_id: id.clone(),
            tenant_id: tenant.clone(),
            product_id: product.clone(),
            sprint_id: is.sprint_id.clone(),
        };
        events.push(NewEvent::of(about, &event));
    }
    if is.status == Status::Removed && was.status != is.status {
        let event = BacklogItemMarkedAsRemoved {
            backlog_item_id: id.clone(),
            tenant_id: tenant.clone(),
            product_id: product.clone(),
        };
        events.push(NewEvent::of(about, &event));
    }
    if was.status != is.status || was.awaiting_acceptance != is.awaiting_acceptance {
        let event = status_changed(before, after, StatusChangeCause::Command, None);
        events.push(NewEvent::of(about, &event));
    }
}
