//! The TeamService adapter: parse, run a command or read the store, map.

use agilepm_platform::domain::error::{AppError, AppResult, shown};
use agilepm_platform::domain::team_zone::TeamZone;
use agilepm_platform::domain::{paging, validate};
use agilepm_platform::wire::auth::caller;
use agilepm_proto::planning::v1::team_service_server::TeamService;
use agilepm_proto::planning::v1::*;
use tonic::{Request, Response, Status};

use super::commands;
use super::domain::{self, Change};
use super::events;
use super::mapping::{self, member_message, settings_message};
use super::store::{self, MemberQuery};
use crate::PlanningApi;

/// An e-mail address: empty, or up to 320 characters without spaces with exactly one
/// `@` that has something on both sides.
fn email(field: &str, value: &str) -> AppResult<String> {
    let text = validate::text(field, value, 0, 320)?;
    if text.is_empty() {
        return Ok(text);
    }
    let one_at = match text.split_once('@') {
        Some((local, domain)) => !local.is_empty() && !domain.is_empty() && !domain.contains('@'),
        None => false,
    };
    if one_at && !text.chars().any(char::is_whitespace) {
        Ok(text)
    } else {
        Err(AppError::invalid(
            field,
            format!("{} is not an e-mail address", shown(&text)),
        ))
    }
}

/// The member id a request's `field` names (required).
fn member_id(field: &str, value: &str) -> AppResult<String> {
    validate::member_id(field, value)?.ok_or_else(|| AppError::invalid(field, "required"))
}

/// A request's roles, checked.
fn roles(field: &str, values: &[i32]) -> AppResult<Vec<domain::Role>> {
    let roles = values
        .iter()
        .enumerate()
        .map(|(i, value)| mapping::role(&format!("{field}[{i}]"), *value))
        .collect::<AppResult<Vec<_>>>()?;
    domain::roles(field, roles)
}

/// Checks an add request.
fn parse_add(request: AddMemberRequest) -> AppResult<domain::Member> {
    let input = request
        .member
        .ok_or_else(|| AppError::invalid("member", "required"))?;
    Ok(domain::Member {
        id: member_id("member.id", &input.id)?,
        tenant_id: String::new(),
        display_name: validate::name("member.display_name", &input.display_name)?,
        email: email("member.email", &input.email)?,
        roles: roles("member.roles", &input.roles)?,
        enabled: true,
        version: 0,
        create_time_us: 0,
        update_time_us: 0,
    })
}

/// Checks an update mask's paths against the fields of `input`.
fn parse_changes(input: &Member, paths: &[String]) -> AppResult<Vec<Change>> {
    if paths.is_empty() {
        return Err(AppError::invalid(
            "update_mask",
            "name the fields to update",
        ));
    }
    paths
        .iter()
        .map(|path| {
            Ok(match path.as_str() {
                "display_name" => {
                    Change::DisplayName(validate::name("member.display_name", &input.display_name)?)
                }
                "email" => Change::Email(email("member.email", &input.email)?),
                "roles" => Change::Roles(roles("member.roles", &input.roles)?),
                other => {
                    return Err(AppError::invalid(
                        "update_mask",
                        format!(
                            "{} cannot be updated (display_name, email, roles can)",
                            shown(other)
                        ),
                    ));
                }
            })
        })
        .collect()
}

/// Checks an UpdateTeamSettings request: the new zone and the version expected (0: the
/// settings were never changed).
fn parse_settings_update(request: UpdateTeamSettingsRequest) -> AppResult<(TeamZone, Option<i64>)> {
    let input = request
        .settings
        .ok_or_else(|| AppError::invalid("settings", "required"))?;
    // Without a mask, every field the settings carry (AIP-134); there is one.
    let paths = request.update_mask.map(|m| m.paths).unwrap_or_default();
    // The one field there is to update.
    if let Some(other) = paths.iter().find(|path| path.as_str() != "time_zone") {
        return Err(AppError::invalid(
            "update_mask",
            format!("{} cannot be updated (time_zone can)", shown(other)),
        ));
    }
    let zone = TeamZone::parse("settings.time_zone", &input.time_zone)?;
    let expected = match request.expected_version {
        Some(version) if version < 0 => {
            return Err(AppError::invalid(
                "expected_version",
                "must not be negative (0: the settings were never changed)",
            ));
        }
        other => other,
    };
    Ok((zone, expected))
}

impl PlanningApi {
    /// Enables or disables member `id`.
    async fn set_enabled(
        &self,
        tenant: &str,
        id: &str,
        expected_version: Option<i64>,
        enabled: bool,
    ) -> AppResult<Member> {
        let id = member_id("id", id)?;
        let expected = validate::expected_version("expected_version", expected_version)?;
        let member = commands::change(
            &self.db,
            &self.peers,
            tenant,
            &id,
            expected,
            |before| domain::enabled(before, enabled),
            events::enabled_or_disabled,
        )
        .await?;
        Ok(member_message(&member))
    }
}

#[tonic::async_trait]
impl TeamService for PlanningApi {
    async fn add_member(
        &self,
        request: Request<AddMemberRequest>,
    ) -> Result<Response<AddMemberResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let new = parse_add(request.into_inner())?;
        let member = commands::add(&self.db, &self.peers, &tenant, new).await?;
        Ok(Response::new(AddMemberResponse {
            member: Some(member_message(&member)),
        }))
    }

    async fn get_member(
        &self,
        request: Request<GetMemberRequest>,
    ) -> Result<Response<GetMemberResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let id = member_id("id", &request.get_ref().id)?;
        let mut conn = self.db.pool().acquire().await.map_err(AppError::from)?;
        let member = store::get(&mut conn, &tenant, &id)
            .await?
            .ok_or_else(|| AppError::not_found(format!("member {id:?}")))?;
        Ok(Response::new(GetMemberResponse {
            member: Some(member_message(&member)),
        }))
    }

    async fn list_members(
        &self,
        request: Request<ListMembersRequest>,
    ) -> Result<Response<ListMembersResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let role = match r.role {
            0 => None,
            value => Some(mapping::role("role", value)?),
        };
        let size = validate::page_size("page_size", r.page_size, 100, 1000)?;
        let role_part = role.map_or(0, |role| role.number()).to_string();
        let disabled_part = r.show_disabled.to_string();
        let page_query = paging::PageQuery::new(
            "agilepm.planning.v1.TeamService/ListMembers",
            &[&tenant, &role_part, &disabled_part],
        );
        let after_id =
            paging::decode_token("page_token", &r.page_token, &page_query)?.unwrap_or_default();
        let query = MemberQuery {
            tenant: &tenant,
            role,
            show_disabled: r.show_disabled,
            after_id: &after_id,
            limit: i64::from(size) + 1,
        };
        let members = store::list(&self.db, &query).await?;
        let (members, next_page_token) =
            paging::finish_page(members, size, &page_query, |member| member.id.clone());
        Ok(Response::new(ListMembersResponse {
            members: members.iter().map(member_message).collect(),
            next_page_token,
        }))
    }

    async fn update_member(
        &self,
        request: Request<UpdateMemberRequest>,
    ) -> Result<Response<UpdateMemberResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let input = r
            .member
            .ok_or_else(|| AppError::invalid("member", "required"))?;
        let id = member_id("member.id", &input.id)?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let changes = parse_changes(&input, &paths)?;
        let expected = validate::expected_version("expected_version", r.expected_version)?;
        let member = commands::change(
            &self.db,
            &self.peers,
            &tenant,
            &id,
            expected,
            |before| domain::update(before, &changes),
            events::updated,
        )
        .await?;
        Ok(Response::new(UpdateMemberResponse {
            member: Some(member_message(&member)),
        }))
    }

    async fn enable_member(
        &self,
        request: Request<EnableMemberRequest>,
    ) -> Result<Response<EnableMemberResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let member = self
            .set_enabled(&tenant, &r.id, r.expected_version, true)
            .await?;
        Ok(Response::new(EnableMemberResponse {
            member: Some(member),
        }))
    }

    async fn disable_member(
        &self,
        request: Request<DisableMemberRequest>,
    ) -> Result<Response<DisableMemberResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let member = self
            .set_enabled(&tenant, &r.id, r.expected_version, false)
            .await?;
        Ok(Response::new(DisableMemberResponse {
            member: Some(member),
        }))
    }

    async fn get_team_settings(
        &self,
        request: Request<GetTeamSettingsRequest>,
    ) -> Result<Response<GetTeamSettingsResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let mut conn = self.db.pool().acquire().await.map_err(AppError::from)?;
        let settings = store::settings(&mut conn, &tenant).await?;
        Ok(Response::new(GetTeamSettingsResponse {
            settings: Some(settings_message(&settings)),
        }))
    }

    async fn update_team_settings(
        &self,
        request: Request<UpdateTeamSettingsRequest>,
    ) -> Result<Response<UpdateTeamSettingsResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let (zone, expected) = parse_settings_update(request.into_inner())?;
        let settings =
            commands::set_time_zone(&self.db, &self.peers, &tenant, expected, zone).await?;
        Ok(Response::new(UpdateTeamSettingsResponse {
            settings: Some(settings_message(&settings)),
        }))
    }
}
