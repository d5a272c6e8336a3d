//! Every event of the UseCase aggregate, built once.

use agilepm_platform::storage::outbox::{NewEvent, Subject};
use agilepm_proto::planning::v1::{UseCaseCreated, UseCaseUpdated};

use super::domain::UseCase;
use super::mapping::use_case_message;

/// Where a use case's events go in the outbox.
pub fn subject(use_case: &UseCase) -> Subject<'_> {
    Subject {
        aggregate_type: "UseCase",
        aggregate_id: &use_case.id,
        tenant_id: &use_case.tenant_id,
    }
}

/// `use_case` was created.
pub fn created(use_case: &UseCase) -> NewEvent<'_> {
    let event = UseCaseCreated {
        use_case: Some(use_case_message(use_case)),
    };
    NewEvent::of(subject(use_case), &event)
}

/// `use_case` changed (fields, rank or state).
pub fn updated(use_case: &UseCase) -> NewEvent<'_> {
    let event = UseCaseUpdated {
        use_case: Some(use_case_message(use_case)),
    };
    NewEvent::of(subject(use_case), &event)
}
