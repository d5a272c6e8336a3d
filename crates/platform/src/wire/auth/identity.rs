//! Who a caller is: a subject (a person or one of our services), the tenant it belongs to,
//! and the roles it holds.

use std::fmt;

use crate::domain::error::{AppError, AppResult};
use crate::domain::service_name::ServiceName;

/// Header a caller that spans tenants (a service, a system operator) uses to name the
/// tenant one call acts for.
pub const TENANT_HEADER: &str = "x-agilepm-tenant";

/// Header one of our services uses to name the person it acts for, so that what the
/// person did through planning is recorded as theirs, not as planning's.
pub const ACTOR_HEADER: &str = "x-agilepm-actor";

pub use crate::domain::actor::{acting_as, acting_subject};

/// What a caller may do. Which role may call which RPC is written once, in
/// [`super::access`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Decides scope and order: products, use cases, releases, prioritizing, acceptance.
    ProductOwner,
    /// Does the work: tasks, estimates, sizing, commitment to sprints.
    TeamMember,
    /// Reads plans and feeds, changes nothing.
    Viewer,
    /// Runs the system: coordinator status and poison events.
    Operator,
    /// One of agilepm's own services; what it may call depends on which one it is.
    Service,
}

impl Role {
    /// Every role, in the order the role table lists them.
    pub const ALL: [Role; 5] = [
        Role::ProductOwner,
        Role::TeamMember,
        Role::Viewer,
        Role::Operator,
        Role::Service,
    ];

    /// The roles a person in a tenant holds in development mode, where tokens are not
    /// verified: everything a tenant can do, nothing that spans tenants.
    pub const TENANT_ROLES: [Role; 3] = [Role::ProductOwner, Role::TeamMember, Role::Viewer];

    /// The name used in token claims, flags and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ProductOwner => "product_owner",
            Role::TeamMember => "team_member",
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Service => "service",
        }
    }

    /// The role named `name` (as in [`Role::as_str`]).
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == name)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The subject of one of our services' own tokens: `service:<name>`.
pub fn service_subject(service: ServiceName) -> String {
    format!("service:{service}")
}

/// The authenticated caller of one request, stored in its extensions by the
/// authentication layer and read by handlers through [`super::caller`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Who acted: a person's id from the identity provider, or `service:<name>`.
    subject: String,
    /// The tenant this request acts for, if it names one.
    tenant: Option<String>,
    /// Whether the caller may see every tenant's data (services, system operators).
    all_tenants: bool,
    /// What the caller may do.
    roles: Vec<Role>,
    /// Which of our services is calling, for service identities.
    service: Option<ServiceName>,
    /// The person a service acts for (`x-agilepm-actor`), if it named one.
    on_behalf_of: Option<String>,
}

impl Caller {
    /// A person (or a tenant's own automation) of `tenant` holding `roles`.
    pub fn person(subject: String, tenant: String, roles: Vec<Role>) -> Caller {
        Caller {
            subject,
            tenant: Some(tenant),
            all_tenants: false,
            roles: roles.into_iter().filter(|r| *r != Role::Service).collect(),
            service: None,
            on_behalf_of: None,
        }
    }

    /// An operator of the whole system: sees every tenant, may act for one named per call.
    pub fn system_operator(subject: String, acting_for: Option<String>) -> Caller {
        Caller {
            subject,
            tenant: acting_for,
            all_tenants: true,
            roles: vec![Role::Operator],
            service: None,
            on_behalf_of: None,
        }
    }

    /// One of agilepm's services, acting for the tenant named per call.
    pub fn service(service: ServiceName, acting_for: Option<String>) -> Caller {
        Caller {
            subject: service_subject(service),
            tenant: acting_for,
            all_tenants: true,
            roles: vec![Role::Service],
            service: Some(service),
            on_behalf_of: None,
        }
    }

    /// This service caller acting for person `subject`.
    pub fn on_behalf_of(mut self, subject: Option<String>) -> Caller {
        self.on_behalf_of = subject;
        self
    }

    /// Who acted, for events, estimation logs and logs: the person a service acts for,
    /// or the caller itself.
    pub fn actor(&self) -> &str {
        self.on_behalf_of.as_deref().unwrap_or(&self.subject)
    }

    /// The tenant this request acts for. Tenant-scoped operations call this; a caller
    /// spanning tenants that named no tenant gets `INVALID_ARGUMENT`.
    pub fn tenant(&self) -> AppResult<&str> {
        self.tenant.as_deref().ok_or_else(|| {
            AppError::invalid(
                TENANT_HEADER,
                "callers that span tenants must name the tenant they act for",
            )
        })
    }

    /// Who acted, for events and logs.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Whether the caller may see `tenant`'s data.
    pub fn may_see(&self, tenant: &str) -> bool {
        self.all_tenants || self.tenant.as_deref() == Some(tenant)
    }

    /// Whether the caller sees every tenant (a service or a system operator).
    pub fn is_all_tenants(&self) -> bool {
        self.all_tenants
    }

    /// Whether the caller holds `role`.
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The roles the caller holds.
    pub fn roles(&self) -> &[Role] {
        &self.roles
    }

    /// Which of our services is calling, if one is.
    pub fn service_name(&self) -> Option<ServiceName> {
        self.service
    }
}

/// Parses a tenant id: 1-64 characters of ASCII letters, digits, `-` and `_`.
pub fn parse_tenant(tenant: &str) -> AppResult<String> {
    let valid = !tenant.is_empty()
        && tenant.len() <= 64
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(tenant.to_owned())
    } else {
        Err(AppError::Unauthenticated(
            "tenant ids are 1-64 characters of letters, digits, '-' and '_'".into(),
        ))
    }
}

/// Parses a subject: 1-128 printable ASCII characters (ids from identity providers,
/// e-mail addresses, `service:<name>`).
pub fn parse_subject(subject: &str) -> AppResult<String> {
    let valid = !subject.is_empty()
        && subject.len() <= 128
        && subject.bytes().all(|b| b.is_ascii_graphic());
    if valid {
        Ok(subject.to_owned())
    } else {
        Err(AppError::Unauthenticated(
            "token subject (sub) must be 1-128 printable ASCII characters".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_round_trip() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("admin"), None);
    }

    #[test]
    fn a_person_never_holds_the_service_role_and_sees_only_its_tenant() {
        let person = Caller::person(
            "ann".into(),
            "acme".into(),
            vec![Role::TeamMember, Role::Service],
        );
        assert!(!person.has_role(Role::Service));
        assert!(person.may_see("acme"));
        assert!(!person.may_see("globex"));
        assert_eq!(person.tenant().unwrap(), "acme");
    }

    #[test]
    fn callers_spanning_tenants_must_name_one_to_act() {
        let service = Caller::service(ServiceName::Coordinator, None);
        assert!(service.may_see("anyone"));
        assert!(service.tenant().is_err());
        assert_eq!(service.subject(), "service:coordinator");
        let acting = Caller::service(ServiceName::Planning, Some("acme".into()));
        assert_eq!(acting.tenant().unwrap(), "acme");
    }

    #[test]
    fn tenants_and_subjects_are_bounded() {
        assert!(parse_tenant("acme-1_x").is_ok());
        for bad in ["", "bad tenant", "../x", &"a".repeat(65)] {
            assert!(parse_tenant(bad).is_err(), "{bad}");
        }
        assert!(parse_subject("ann@example.com").is_ok());
        assert!(parse_subject("has space").is_err());
        assert!(parse_subject(&"s".repeat(129)).is_err());
    }
}
