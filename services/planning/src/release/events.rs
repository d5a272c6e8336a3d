//! Every event of the Release aggregate, built once.

use agilepm_platform::storage::outbox::{NewEvent, Subject};
use agilepm_proto::planning::v1::{
    ReleaseArchived, ReleaseScheduled, ReleaseUnarchived, ReleaseUpdated,
};

use super::domain::Release;
use super::mapping::release_message;

/// Where a release's events go in the outbox.
pub fn subject(release: &Release) -> Subject<'_> {
    Subject {
        aggregate_type: "Release",
        aggregate_id: &release.id,
        tenant_id: &release.tenant_id,
    }
}

/// `release` was scheduled.
pub fn scheduled(release: &Release) -> NewEvent<'_> {
    let event = ReleaseScheduled {
        release: Some(release_message(release)),
    };
    NewEvent::of(subject(release), &event)
}

/// `release` was renamed, described or rescheduled.
pub fn updated(release: &Release) -> NewEvent<'_> {
    let event = ReleaseUpdated {
        release: Some(release_message(release)),
    };
    NewEvent::of(subject(release), &event)
}

/// `release` was archived.
pub fn archived(release: &Release) -> NewEvent<'_> {
    let event = ReleaseArchived {
        release: Some(release_message(release)),
    };
    NewEvent::of(subject(release), &event)
}

/// `release` came back into planning.
pub fn unarchived(release: &Release) -> NewEvent<'_> {
    let event = ReleaseUnarchived {
        release: Some(release_message(release)),
    };
    NewEvent::of(subject(release), &event)
}
