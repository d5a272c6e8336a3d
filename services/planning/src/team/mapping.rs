//! Between members and their protobuf messages.

use agilepm_platform::domain::error::{AppError, AppResult};
use agilepm_platform::domain::time::timestamp;
use agilepm_proto::planning::v1 as proto;
use agilepm_proto::task::v1::MemberFacts;

use super::domain::{Member, Role};

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
