//! Every event of the team, built once.

use agilepm_platform::storage::outbox::{NewEvent, Subject};
use agilepm_proto::planning::v1::{
    MemberAdded, MemberDisabled, MemberEnabled, MemberUpdated, TeamSettingsChanged,
};

use super::domain::{Member, TeamSettings};
use super::mapping::{member_message, settings_message};

/// Where a member's events go in the outbox.
pub fn subject(member: &Member) -> Subject<'_> {
    Subject {
        aggregate_type: "Member",
        aggregate_id: &member.id,
        tenant_id: &member.tenant_id,
    }
}

/// `member` joined the team.
pub fn added(member: &Member) -> NewEvent<'_> {
    let event = MemberAdded {
        member: Some(member_message(member)),
    };
    NewEvent::of(subject(member), &event)
}

/// `member`'s name, e-mail or roles changed.
pub fn updated(member: &Member) -> NewEvent<'_> {
    let event = MemberUpdated {
        member: Some(member_message(member)),
    };
    NewEvent::of(subject(member), &event)
}

/// `member` was enabled or disabled, as it now is.
pub fn enabled_or_disabled(member: &Member) -> NewEvent<'_> {
    let message = Some(member_message(member));
    if member.enabled {
        NewEvent::of(subject(member), &MemberEnabled { member: message })
    } else {
        NewEvent::of(subject(member), &MemberDisabled { member: message })
    }
}

/// The team's settings changed, as they now are.
pub fn settings_changed(settings: &TeamSettings) -> NewEvent<'_> {
    let subject = Subject {
        aggregate_type: "TeamSettings",
        aggregate_id: &settings.tenant_id,
        tenant_id: &settings.tenant_id,
    };
    let event = TeamSettingsChanged {
        settings: Some(settings_message(settings)),
    };
    NewEvent::of(subject, &event)
}
