//! Which roles may call which RPC: the one table, checked by the authentication layer
//! before any handler runs.
//!
//! Every method of every agilepm service has a row (a test walks the descriptor set to
//! make sure); a method without one is refused, so a new RPC is closed until someone
//! decides who may call it. Health and reflection are not agilepm methods and stay open,
//! so probes and `grpcurl list` work without a token.
//!
//! A row names the person roles that may call the method and which of our services may.
//! Services are listed one by one (least privilege): the task service may read backlog
//! items but not reconcile them; only the coordinator may reconcile.

use crate::domain::error::{AppError, AppResult};
use crate::domain::service_name::ServiceName;
use crate::wire::auth::identity::{Caller, Role};

/// Who may call one method.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// Person roles allowed (any one suffices).
    pub roles: &'static [Role],
    /// Our services allowed, by identity.
    pub services: &'static [ServiceName],
}

use Role::{Operator, ProductOwner, TeamMember, Viewer};
use ServiceName::{Coordinator, Notifier, Planning, Task};

const READ: &[Role] = &[ProductOwner, TeamMember, Viewer];
const PO: &[Role] = &[ProductOwner];
const TEAM: &[Role] = &[TeamMember];
const PO_TEAM: &[Role] = &[ProductOwner, TeamMember];
const NOBODY: &[Role] = &[];
const NO_SERVICE: &[ServiceName] = &[];

const fn rule(roles: &'static [Role], services: &'static [ServiceName]) -> Rule {
    Rule { roles, services }
}

/// The table: fully qualified service name, method, rule.
#[rustfmt::skip]
pub const TABLE: &[(&str, &str, Rule)] = &[
    // backlog-item: commands that name a sprint or release go through planning, which
    // checks the reference; reconciling is the coordinator's alone.
    ("agilepm.backlog.v1.BacklogItemService", "PlanBacklogItem", rule(PO_TEAM, &[Planning])),
    ("agilepm.backlog.v1.BacklogItemService", "GetBacklogItem", rule(READ, &[Planning, Task])),
    ("agilepm.backlog.v1.BacklogItemService", "ListBacklogItems", rule(READ, &[Planning])),
    ("agilepm.backlog.v1.BacklogItemService", "ListSprintMemberships", rule(READ, &[Planning])),
    ("agilepm.backlog.v1.BacklogItemService", "UpdateBacklogItem", rule(PO_TEAM, &[Planning])),
    ("agilepm.backlog.v1.BacklogItemService", "ScheduleBacklogItem", rule(NOBODY, &[Planning])),
    ("agilepm.backlog.v1.BacklogItemService", "UnscheduleBacklogItem", rule(NOBODY, &[Planning])),
    ("agilepm.backlog.v1.BacklogItemService", "CommitBacklogItem", rule(NOBODY, &[Planning])),
    ("agilepm.backlog.v1.BacklogItemService", "UncommitBacklogItem", rule(NOBODY, &[Planning])),
    ("agilepm.backlog.v1.BacklogItemService", "RemoveBacklogItem", rule(PO, &[Planning])),
    ("agilepm.backlog.v1.BacklogItemService", "MarkBacklogItemDone", rule(PO, NO_SERVICE)),
    ("agilepm.backlog.v1.BacklogItemService", "MoveBacklogItem", rule(PO, &[Planning])),
    // The sprint backlog belongs to the people doing the work, and the product owner.
    ("agilepm.backlog.v1.BacklogItemService", "MoveBacklogItemInSprint", rule(PO_TEAM, NO_SERVICE)),
    ("agilepm.backlog.v1.BacklogItemService", "ReconcileBacklogItemStatus", rule(NOBODY, &[Coordinator])),
    ("agilepm.backlog.v1.BacklogItemService", "ReconcileBacklogItemStatuses", rule(NOBODY, &[Coordinator])),
    ("agilepm.backlog.v1.BacklogItemService", "SyncProducts", rule(NOBODY, &[Planning])),
    ("agilepm.backlog.v1.BacklogItemService", "SyncUseCases", rule(NOBODY, &[Planning])),
    ("agilepm.backlog.v1.BacklogItemService", "ReshapeBacklogItems", rule(NOBODY, &[Planning])),
    // task
    ("agilepm.task.v1.TaskService", "DefineTask", rule(TEAM, NO_SERVICE)),
    ("agilepm.task.v1.TaskService", "GetTask", rule(READ, NO_SERVICE)),
    ("agilepm.task.v1.TaskService", "ListTasks", rule(READ, NO_SERVICE)),
    ("agilepm.task.v1.TaskService", "RenameTask", rule(TEAM, NO_SERVICE)),
    ("agilepm.task.v1.TaskService", "DescribeTask", rule(TEAM, NO_SERVICE)),
    ("agilepm.task.v1.TaskService", "AssignTaskVolunteer", rule(TEAM, NO_SERVICE)),
    ("agilepm.task.v1.TaskService", "UnassignTaskVolunteer", rule(TEAM, NO_SERVICE)),
    ("agilepm.task.v1.TaskService", "ChangeTaskStatus", rule(TEAM, NO_SERVICE)),
    ("agilepm.task.v1.TaskService", "EstimateTaskHoursRemaining", rule(TEAM, NO_SERVICE)),
    ("agilepm.task.v1.TaskService", "RemoveTask", rule(TEAM, NO_SERVICE)),
    ("agilepm.task.v1.TaskService", "GetBacklogItemTaskTotals", rule(READ, &[Coordinator])),
    ("agilepm.task.v1.TaskService", "GetBurndown", rule(READ, &[Planning])),
    ("agilepm.task.v1.TaskService", "SyncMembers", rule(NOBODY, &[Planning])),
    ("agilepm.task.v1.TaskService", "SyncTeamSettings", rule(NOBODY, &[Planning])),
    // planning: products
    ("agilepm.planning.v1.ProductService", "CreateProduct", rule(PO, NO_SERVICE)),
    ("agilepm.planning.v1.ProductService", "GetProduct", rule(READ, NO_SERVICE)),
    ("agilepm.planning.v1.ProductService", "ListProducts", rule(READ, NO_SERVICE)),
    ("agilepm.planning.v1.ProductService", "UpdateProduct", rule(PO, NO_SERVICE)),
    // planning: use cases
    ("agilepm.planning.v1.UseCaseService", "CreateUseCase", rule(PO, NO_SERVICE)),
    ("agilepm.planning.v1.UseCaseService", "GetUseCase", rule(READ, NO_SERVICE)),
    ("agilepm.planning.v1.UseCaseService", "ListUseCases", rule(READ, NO_SERVICE)),
    ("agilepm.planning.v1.UseCaseService", "UpdateUseCase", rule(PO, NO_SERVICE)),
    ("agilepm.planning.v1.UseCaseService", "RankUseCase", rule(PO, NO_SERVICE)),
    ("agilepm.planning.v1.UseCaseService", "RetireUseCase", rule(PO, NO_SERVICE)),
    // planning: releases
    ("agilepm.planning.v1.ReleaseService", "ScheduleRelease", rule(PO, NO_SERVICE)),
    ("agilepm.planning.v1.ReleaseService", "GetRelease", rule(READ, NO_SERVICE)),
    ("agilepm.planning.v1.ReleaseService", "ListReleases", rule(READ, NO_SERVICE)),
    ("agilepm.planning.v1.ReleaseService", "UpdateRelease", rule(PO, NO_SERVICE)),
    ("agilepm.planning.v1.ReleaseService", "ArchiveRelease", rule(PO, NO_SERVICE)),
    ("agilepm.planning.v1.ReleaseService", "UnarchiveRelease", rule(PO, NO_SERVICE)),
    ("agilepm.planning.v1.ReleaseService", "ScheduleBacklogItemForRelease", rule(PO, NO_SERVICE)),
    ("agilepm.planning.v1.ReleaseService", "UnscheduleBacklogItemFromRelease", rule(PO, NO_SERVICE)),
    // planning: sprints
    ("agilepm.planning.v1.SprintService", "ScheduleSprint", rule(PO_TEAM, NO_SERVICE)),
    ("agilepm.planning.v1.SprintService", "GetSprint", rule(READ, NO_SERVICE)),
    ("agilepm.planning.v1.SprintService", "ListSprints", rule(READ, NO_SERVICE)),
    ("agilepm.planning.v1.SprintService", "UpdateSprint", rule(PO_TEAM, NO_SERVICE)),
    ("agilepm.planning.v1.SprintService", "StartSprint", rule(PO, NO_SERVICE)),
    ("agilepm.planning.v1.SprintService", "CompleteSprint", rule(PO, NO_SERVICE)),
    ("agilepm.planning.v1.SprintService", "CommitBacklogItemToSprint", rule(PO_TEAM, NO_SERVICE)),
    ("agilepm.planning.v1.SprintService", "UncommitBacklogItemFromSprint", rule(PO_TEAM, NO_SERVICE)),
    // planning: the team (the product owner staffs it; everyone may see it)
    ("agilepm.planning.v1.TeamService", "AddMember", rule(PO, NO_SERVICE)),
    ("agilepm.planning.v1.TeamService", "GetMember", rule(READ, NO_SERVICE)),
    ("agilepm.planning.v1.TeamService", "ListMembers", rule(READ, NO_SERVICE)),
    ("agilepm.planning.v1.TeamService", "UpdateMember", rule(PO, NO_SERVICE)),
    ("agilepm.planning.v1.TeamService", "EnableMember", rule(PO, NO_SERVICE)),
    ("agilepm.planning.v1.TeamService", "DisableMember", rule(PO, NO_SERVICE)),
    ("agilepm.planning.v1.TeamService", "GetTeamSettings", rule(READ, NO_SERVICE)),
    ("agilepm.planning.v1.TeamService", "UpdateTeamSettings", rule(PO, NO_SERVICE)),
    // planning: the planning game
    ("agilepm.planning.v1.PlanningGameService", "BreakDownUseCase", rule(PO_TEAM, NO_SERVICE)),
    ("agilepm.planning.v1.PlanningGameService", "SplitBacklogItem", rule(PO_TEAM, NO_SERVICE)),
    ("agilepm.planning.v1.PlanningGameService", "GroupBacklogItems", rule(PO_TEAM, NO_SERVICE)),
    // A spike is planned because the team could not size the item, and it marks the item
    // UNESTIMABLE: sizing, which is the team's (the field table's story_points).
    ("agilepm.planning.v1.PlanningGameService", "PlanSpike", rule(TEAM, NO_SERVICE)),
    ("agilepm.planning.v1.PlanningGameService", "PrioritizeBacklog", rule(PO, NO_SERVICE)),
    // planning: reports
    // The notifier reads burndowns to tell whether an active sprint is at risk.
    ("agilepm.planning.v1.ReportService", "GetSprintBurndown", rule(READ, &[Notifier])),
    ("agilepm.planning.v1.ReportService", "GetVelocity", rule(READ, NO_SERVICE)),
    // coordinator: system-wide state, for operators
    ("agilepm.coordinator.v1.CoordinatorService", "GetCoordinatorStatus", rule(&[Operator], NO_SERVICE)),
    ("agilepm.coordinator.v1.CoordinatorService", "ListPoisonEvents", rule(&[Operator], NO_SERVICE)),
    ("agilepm.coordinator.v1.CoordinatorService", "SkipPoisonEvent", rule(&[Operator], NO_SERVICE)),
    ("agilepm.coordinator.v1.CoordinatorService", "ListParkedItems", rule(&[Operator], NO_SERVICE)),
    ("agilepm.coordinator.v1.CoordinatorService", "RetryParkedItem", rule(&[Operator], NO_SERVICE)),
    ("agilepm.coordinator.v1.CoordinatorService", "SkipParkedItem", rule(&[Operator], NO_SERVICE)),
    // notifier: a tenant's product owner manages its webhooks; deliveries are the product
    // owner's and operators' to inspect and send again (a system operator's for every tenant)
    ("agilepm.notifier.v1.NotifierService", "CreateSubscription", rule(PO, NO_SERVICE)),
    ("agilepm.notifier.v1.NotifierService", "GetSubscription", rule(PO, NO_SERVICE)),
    ("agilepm.notifier.v1.NotifierService", "ListSubscriptions", rule(PO, NO_SERVICE)),
    ("agilepm.notifier.v1.NotifierService", "UpdateSubscription", rule(PO, NO_SERVICE)),
    ("agilepm.notifier.v1.NotifierService", "RotateSubscriptionSecret", rule(PO, NO_SERVICE)),
    ("agilepm.notifier.v1.NotifierService", "DeleteSubscription", rule(PO, NO_SERVICE)),
    ("agilepm.notifier.v1.NotifierService", "ListDeliveries", rule(&[ProductOwner, Operator], NO_SERVICE)),
    ("agilepm.notifier.v1.NotifierService", "RedeliverDeliveries", rule(&[ProductOwner, Operator], NO_SERVICE)),
    // every service's event feed: tenants see their own events, the coordinator, the
    // notifier and system operators every tenant's
    ("agilepm.events.v1.EventFeedService", "Subscribe", rule(&[ProductOwner, TeamMember, Viewer, Operator], &[Coordinator, Notifier])),
    ("agilepm.events.v1.EventFeedService", "GetFeedHead", rule(&[ProductOwner, TeamMember, Viewer, Operator], &[Coordinator, Notifier])),
    ("agilepm.events.v1.EventFeedService", "AcknowledgeFeedPosition", rule(&[Operator], &[Coordinator, Notifier])),
    ("agilepm.events.v1.EventFeedService", "ListFeedConsumers", rule(&[Operator], &[])),
    ("agilepm.events.v1.EventFeedService", "ForgetFeedConsumer", rule(&[Operator], &[])),
];

/// Who may set one field of one method's request, where that is narrower than who may
/// call the method: the product owner decides value (business priority; backlog order is
/// the product owner's at the method level: MoveBacklogItem, PrioritizeBacklog), the team
/// sizes (story points; PlanSpike, which marks an item UNESTIMABLE, is the team's at the
/// method level). A person holding either
/// role may set what that role may; our services (planning acting for a person it has
/// already checked) may set every field.
#[derive(Debug, Clone, Copy)]
pub struct FieldRule {
    /// Fully qualified service name.
    pub service: &'static str,
    /// Method.
    pub method: &'static str,
    /// The field, as the request names it (`story_points`, `business_priority`).
    pub field: &'static str,
    /// What the field decides, for refusals ("sizing").
    pub decides: &'static str,
    /// Person roles that may set it (any one suffices).
    pub roles: &'static [Role],
}

const fn field(
    service: &'static str,
    method: &'static str,
    field: &'static str,
    decides: &'static str,
    roles: &'static [Role],
) -> FieldRule {
    FieldRule {
        service,
        method,
        field,
        decides,
        roles,
    }
}

const BACKLOG: &str = "agilepm.backlog.v1.BacklogItemService";
const GAME: &str = "agilepm.planning.v1.PlanningGameService";

/// The fields whose writers the method's row does not settle alone.
#[rustfmt::skip]
pub const FIELDS: &[FieldRule] = &[
    field(BACKLOG, "PlanBacklogItem", "business_priority", "an item's value to the business", PO),
    field(BACKLOG, "PlanBacklogItem", "story_points", "sizing", TEAM),
    field(BACKLOG, "UpdateBacklogItem", "business_priority", "an item's value to the business", PO),
    field(BACKLOG, "UpdateBacklogItem", "story_points", "sizing", TEAM),
    field(GAME, "BreakDownUseCase", "story_points", "sizing", TEAM),
    field(GAME, "SplitBacklogItem", "story_points", "sizing", TEAM),
    field(GAME, "GroupBacklogItems", "story_points", "sizing", TEAM),
];

/// Refuses `caller` setting `field` of `service`'s `method` unless the field table lets
/// it, naming the field and the role it needs. Fields without a row follow the method's.
pub fn authorize_field(caller: &Caller, service: &str, method: &str, field: &str) -> AppResult<()> {
    let Some(rule) = FIELDS
        .iter()
        .find(|r| r.service == service && r.method == method && r.field == field)
    else {
        return Ok(());
    };
    if caller.service_name().is_some() || rule.roles.iter().any(|role| caller.has_role(*role)) {
        return Ok(());
    }
    let roles: Vec<&str> = rule.roles.iter().map(|r| r.as_str()).collect();
    Err(AppError::PermissionDenied(format!(
        "{method}: field {field} ({}) needs role {}; the caller holds {}",
        rule.decides,
        roles.join(" or "),
        holds(caller)
    )))
}

/// What a request path asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// Not an agilepm method (health, reflection): open to anyone.
    Public,
    /// An agilepm method with its rule.
    Ruled(Rule),
    /// An agilepm method without a rule: refused.
    Unruled,
}

impl PartialEq for Rule {
    fn eq(&self, other: &Rule) -> bool {
        self.roles == other.roles && self.services == other.services
    }
}
impl Eq for Rule {}

/// The guard for an HTTP/2 path `/package.Service/Method`.
pub fn guard(path: &str) -> Guard {
    let Some((service, method)) = path.trim_start_matches('/').split_once('/') else {
        return Guard::Public;
    };
    if !service.starts_with("agilepm.") {
        return Guard::Public;
    }
    TABLE
        .iter()
        .find(|(s, m, _)| *s == service && *m == method)
        .map_or(Guard::Unruled, |(_, _, rule)| Guard::Ruled(*rule))
}

/// Refuses `caller` unless `rule` lets it call `method`, naming what the method needs.
pub fn authorize(caller: &Caller, method: &str, rule: &Rule) -> AppResult<()> {
    if let Some(service) = caller.service_name() {
        if rule.services.contains(&service) {
            return Ok(());
        }
    } else if rule.roles.iter().any(|role| caller.has_role(*role)) {
        return Ok(());
    }
    Err(AppError::PermissionDenied(format!(
        "{method} {}; the caller holds {}",
        needs(rule),
        holds(caller)
    )))
}

fn needs(rule: &Rule) -> String {
    let roles: Vec<&str> = rule.roles.iter().map(|r| r.as_str()).collect();
    let services: Vec<String> = rule
        .services
        .iter()
        .map(|s| format!("the {s} service"))
        .collect();
    match (roles.is_empty(), services.is_empty()) {
        (true, true) => "is closed to every caller".into(),
        (true, false) => format!("is internal: only {} may call it", services.join(" or ")),
        (false, _) => format!("needs role {}", roles.join(" or ")),
    }
}

fn holds(caller: &Caller) -> String {
    match caller.service_name() {
        Some(service) => format!("the {service} service's identity"),
        None if caller.roles().is_empty() => "no role".into(),
        None => {
            let roles: Vec<&str> = caller.roles().iter().map(|r| r.as_str()).collect();
            format!("role {}", roles.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(roles: &[Role]) -> Caller {
        Caller::person("ann".into(), "acme".into(), roles.to_vec())
    }

    #[test]
    fn paths_outside_agilepm_are_public_and_unknown_agilepm_methods_are_refused() {
        assert_eq!(guard("/grpc.health.v1.Health/Check"), Guard::Public);
        assert_eq!(
            guard("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Guard::Public
        );
        assert_eq!(
            guard("/agilepm.task.v1.TaskService/DropTables"),
            Guard::Unruled
        );
        assert!(matches!(
            guard("/agilepm.task.v1.TaskService/GetTask"),
            Guard::Ruled(_)
        ));
    }

    #[test]
    fn fields_narrow_their_method_and_name_the_role_they_need() {
        let po = person(&[Role::ProductOwner]);
        let team = person(&[Role::TeamMember]);
        let both = person(&[Role::ProductOwner, Role::TeamMember]);
        let planning = Caller::service(ServiceName::Planning, Some("acme".into()));
        let update = "UpdateBacklogItem";
        let refused = authorize_field(&po, BACKLOG, update, "story_points").unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(
            refused
                .to_string()
                .contains("field story_points (sizing) needs role team_member")
                && refused.to_string().contains("role product_owner"),
            "{refused}"
        );
        assert!(authorize_field(&team, BACKLOG, update, "business_priority").is_err());
        assert!(authorize_field(&team, BACKLOG, update, "story_points").is_ok());
        assert!(authorize_field(&po, BACKLOG, update, "business_priority").is_ok());
        assert!(authorize_field(&both, BACKLOG, update, "story_points").is_ok());
        assert!(authorize_field(&planning, BACKLOG, update, "story_points").is_ok());
        assert!(
            authorize_field(&po, BACKLOG, update, "summary").is_ok(),
            "no row: the method's"
        );
        for rule in FIELDS {
            assert!(
                TABLE
                    .iter()
                    .any(|(s, m, _)| *s == rule.service && *m == rule.method),
                "{}.{} has no method row",
                rule.service,
                rule.method
            );
        }
    }

    #[test]
    fn only_the_coordinator_reconciles() {
        let Guard::Ruled(rule) =
            guard("/agilepm.backlog.v1.BacklogItemService/ReconcileBacklogItemStatus")
        else {
            panic!("reconcile has a rule");
        };
        let everyone = Caller::person("po".into(), "acme".into(), Role::ALL.to_vec());
        let refused = authorize(&everyone, "ReconcileBacklogItemStatus", &rule).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("only the coordinator service may call it"),
            "{refused}"
        );
        let task = Caller::service(ServiceName::Task, None);
        assert!(authorize(&task, "x", &rule).is_err());
        let coordinator = Caller::service(ServiceName::Coordinator, None);
        assert!(authorize(&coordinator, "x", &rule).is_ok());
    }

    #[test]
    fn a_refusal_names_the_roles_needed_and_held() {
        let Guard::Ruled(rule) = guard("/agilepm.planning.v1.ProductService/CreateProduct") else {
            panic!("has a rule");
        };
        let error = authorize(&person(&[Viewer]), "CreateProduct", &rule).unwrap_err();
        assert_eq!(
            error.to_string(),
            "CreateProduct needs role product_owner; the caller holds role viewer"
        );
    }

    #[test]
    fn the_table_has_one_row_per_method() {
        let mut seen = std::collections::HashSet::new();
        for (service, method, _) in TABLE {
            assert!(seen.insert((service, method)), "{service}/{method} twice");
        }
    }
}
