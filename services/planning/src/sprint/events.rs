//! Every event of the Sprint aggregate, built once.

use agilepm_platform::storage::outbox::{NewEvent, Subject};
use agilepm_proto::planning::v1::{SprintCompleted, SprintScheduled, SprintStarted, SprintUpdated};

use super::domain::Sprint;
use super::mapping::sprint_message;

/// Where a sprint's events go in the outbox.
pub fn subject(sprint: &Sprint) -> Subject<'_> {
    Subject {
        aggregate_type: "Sprint",
        aggregate_id: &sprint.id,
        tenant_id: &sprint.tenant_id,
    }
}

/// `sprint` was scheduled.
pub fn scheduled(sprint: &Sprint) -> NewEvent<'_> {
    let event = SprintScheduled {
        sprint: Some(sprint_message(sprint)),
    };
    NewEvent::of(subject(sprint), &event)
}

/// `sprint`'s fields changed.
pub fn updated(sprint: &Sprint) -> NewEvent<'_> {
    let event = SprintUpdated {
        sprint: Some(sprint_message(sprint)),
    };
    NewEvent::of(subject(sprint), &event)
}

/// `sprint` started.
pub fn started(sprint: &Sprint) -> NewEvent<'_> {
    let event = SprintStarted {
        sprint_id: sprint.id.clone(),
        tenant_id: sprint.tenant_id.clone(),
        product_id: sprint.product_id.clone(),
    };
    NewEvent::of(subject(sprint), &event)
}

/// `sprint` completed (with its summary).
pub fn completed(sprint: &Sprint) -> NewEvent<'_> {
    let event = SprintCompleted {
        sprint: Some(sprint_message(sprint)),
    };
    NewEvent::of(subject(sprint), &event)
}
