//! The Member entity and the team's settings, free of I/O and of protobuf.

use agilepm_platform::domain::error::{AppError, AppResult};
use agilepm_platform::domain::team_zone::TeamZone;
use agilepm_platform::numbered_enum;

numbered_enum! {
    /// What a member does; a member may hold both.
    pub enum Role {
        /// Does the work: may volunteer for tasks.
        TeamMember = 1,
        /// Owns products: may be named a product's owner.
        ProductOwner = 2,
    }
}

impl Role {
    /// The name the protobuf enum gives it, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Role::TeamMember => "MEMBER_ROLE_TEAM_MEMBER",
            Role::ProductOwner => "MEMBER_ROLE_PRODUCT_OWNER",
        }
    }
}

/// A person on a tenant's team.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Id: the subject of the person's tokens.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Name shown to people.
    pub display_name: String,
    /// E-mail address, empty if none.
    pub email: String,
    /// Roles, sorted, none twice, at least one.
    pub roles: Vec<Role>,
    /// Whether the member can be given work or products.
    pub enabled: bool,
    /// Optimistic concurrency version.
    pub version: i64,
    /// Added (µs).
    pub create_time_us: i64,
    /// Last changed (µs).
    pub update_time_us: i64,
}

/// What the whole of a tenant's team shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamSettings {
    /// Owning tenant.
    pub tenant_id: String,
    /// The team's time zone: which day it is for the team.
    pub time_zone: TeamZone,
    /// Optimistic concurrency version: 0 until first changed.
    pub version: i64,
    /// Last changed (µs); 0 until first changed.
    pub update_time_us: i64,
}

impl TeamSettings {
    /// The settings of a team that has changed none: UTC.
    pub fn defaults(tenant: &str) -> TeamSettings {
        TeamSettings {
            tenant_id: tenant.to_owned(),
            time_zone: TeamZone::UTC,
            version: 0,
            update_time_us: 0,
        }
    }
}

impl Member {
    /// Holds `role`.
    pub fn holds(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The fields an add request sets, to tell a repeated add from a conflicting one.
    pub fn same_as_added(&self, other: &Member) -> bool {
        (&self.display_name, &self.email, &self.roles)
            == (&other.display_name, &other.email, &other.roles)
    }
}

/// `roles` as a member holds them: sorted, at least one, none twice (`field` names them
/// in a refusal).
pub fn roles(field: &str, mut roles: Vec<Role>) -> AppResult<Vec<Role>> {
    if roles.is_empty() {
        return Err(AppError::invalid(field, "name at least one role"));
    }
    roles.sort_unstable();
    if let Some(twice) = roles.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(AppError::invalid(
            field,
            format!("{} is listed twice", twice[0].name()),
        ));
    }
    Ok(roles)
}

/// A checked change of one field (an update mask's path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// New display name.
    DisplayName(String),
    /// New e-mail address.
    Email(String),
    /// New roles (checked by [`roles`]).
    Roles(Vec<Role>),
}

/// `before` with `changes`.
pub fn update(before: &Member, changes: &[Change]) -> Member {
    let mut after = before.clone();
    for change in changes {
        match change.clone() {
            Change::DisplayName(name) => after.display_name = name,
            Change::Email(email) => after.email = email,
            Change::Roles(roles) => after.roles = roles,
        }
    }
    after
}

/// `before`, enabled (`true`) or disabled.
pub fn enabled(before: &Member, enabled: bool) -> Member {
    Member {
        enabled,
        ..before.clone()
    }
}

/// A product's owner is an enabled member holding the product-owner role: `member` is
/// what is recorded of `member_id` (none: not on the team). Refusals name `field`.
pub fn product_owner(field: &str, member_id: &str, member: Option<&Member>) -> AppResult<()> {
    let why = match member {
        None => "is not on the team; add them with TeamService.AddMember",
        Some(member) if !member.enabled => "is disabled; enable them first",
        Some(member) if !member.holds(Role::ProductOwner) => {
            "does not hold the product-owner role (MEMBER_ROLE_PRODUCT_OWNER)"
        }
        Some(_) => return Ok(()),
    };
    Err(AppError::precondition(format!(
        "{field}: member {member_id:?} {why}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(roles: Vec<Role>, enabled: bool) -> Member {
        Member {
            id: "ada".into(),
            tenant_id: "t".into(),
            display_name: "Ada".into(),
            email: String::new(),
            roles,
            enabled,
            version: 1,
            create_time_us: 0,
            update_time_us: 0,
        }
    }

    #[test]
    fn roles_are_sorted_and_neither_missing_nor_repeated() {
        let sorted = roles("roles", vec![Role::ProductOwner, Role::TeamMember]).unwrap();
        assert_eq!(sorted, [Role::TeamMember, Role::ProductOwner]);
        assert!(roles("roles", vec![]).is_err());
        let error = roles("member.roles", vec![Role::TeamMember, Role::TeamMember]).unwrap_err();
        assert!(error.to_string().contains("member.roles"), "{error}");
    }

    #[test]
    fn a_product_owner_is_an_enabled_member_holding_the_role() {
        let owner = member(vec![Role::ProductOwner], true);
        assert!(product_owner("f", "ada", Some(&owner)).is_ok());
        for (member, why) in [
            (None, "not on the team"),
            (Some(member(vec![Role::ProductOwner], false)), "disabled"),
            (
                Some(member(vec![Role::TeamMember], true)),
                "product-owner role",
            ),
        ] {
            let error = product_owner("f", "ada", member.as_ref()).unwrap_err();
            assert!(error.to_string().contains(why), "{error}");
        }
    }
}
