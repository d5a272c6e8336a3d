//! Between members (and the team's settings) and their protobuf messages.

use agilepm_platform::domain::error::{AppError, AppResult};
use agilepm_platform::domain::time::timestamp;
use agilepm_proto::planning::v1 as proto;
use agilepm_proto::task::v1::{MemberFacts, SyncTeamSettingsRequest};

use super::domain::{Member, Role, TeamSettings};

/// `member` as responses and events carry it.
pub fn member_message(member: &Member) -> proto::Member {
    proto::Member {
        id: member.id.clone(),
        tenant_id: member.tenant_id.clone(),
        display_name: member.display_name.clone(),
        email: member.email.clone(),
        roles: member.roles.iter().map(|role| role.number()).collect(),
        enabled: member.enabled,
        version: member.version,
        create_time: Some(timestamp(member.create_time_us)),
        update_time: Some(timestamp(member.update_time_us)),
    }
}

/// What the task service records of `member`.
pub fn facts(member: &Member) -> MemberFacts {
    MemberFacts {
        member_id: member.id.clone(),
        enabled: member.enabled,
        team_member: member.holds(Role::TeamMember),
        member_version: member.version,
    }
}

/// The role a request's `field` names.
pub fn role(field: &str, value: i32) -> AppResult<Role> {
    Role::try_from(value).map_err(|_| {
        AppError::invalid(
            field,
            format!(
                "{value} is not a role: use MEMBER_ROLE_TEAM_MEMBER or MEMBER_ROLE_PRODUCT_OWNER"
            ),
        )
    })
}

/// `settings` as responses and events carry them.
pub fn settings_message(settings: &TeamSettings) -> proto::TeamSettings {
    proto::TeamSettings {
        tenant_id: settings.tenant_id.clone(),
        time_zone: settings.time_zone.name().to_owned(),
        version: settings.version,
        update_time: (settings.version > 0).then(|| timestamp(settings.update_time_us)),
    }
}

/// What the task service records of `settings`.
pub fn settings_facts(settings: &TeamSettings) -> SyncTeamSettingsRequest {
    SyncTeamSettingsRequest {
        time_zone: settings.time_zone.name().to_owned(),
        settings_version: settings.version,
    }
}
