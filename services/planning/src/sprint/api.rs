//! The SprintService adapter: parse, run a command or read the store, map.

use agilepm_platform::domain::error::{AppError, AppResult, shown};
use agilepm_platform::domain::validate;
use agilepm_platform::storage::idempotency::{self, Key};
use agilepm_platform::wire::auth::caller;
use agilepm_proto::planning::v1::sprint_service_server::SprintService;
use agilepm_proto::planning::v1::*;
use tonic::{Request, Response, Status};

use super::commands::{self, NewSprint};
use super::domain::{self, Change};
use super::events;
use super::mapping::sprint_message;
use super::store;
use crate::PlanningApi;
use crate::schedule::PeriodPage;
use crate::versioned;

/// Checks a schedule request.
fn parse_schedule(request: ScheduleSprintRequest) -> AppResult<NewSprint> {
    let request_id = validate::request_id("request_id", &request.request_id)?;
    let input = request
        .sprint
        .ok_or_else(|| AppError::invalid("sprint", "required"))?;
    let product_id = validate::uuid("sprint.product_id", &input.product_id)?.to_string();
    let name = validate::name("sprint.name", &input.name)?;
    let goal = validate::description("sprint.goal", &input.goal)?;
    let begin_date = validate::date("sprint.begin_date", &input.begin_date)?;
    let end_date = validate::date("sprint.end_date", &input.end_date)?;
    domain::period(begin_date, end_date, "sprint.end_date")?;
    Ok(NewSprint {
        request_id,
        product_id,
        name,
        goal,
        begin_date,
        end_date,
    })
}

/// Checks an update mask's paths against the fields of `input`.
fn parse_changes(input: &Sprint, paths: &[String]) -> AppResult<Vec<Change>> {
    paths
        .iter()
        .map(|path| {
            Ok(match path.as_str() {
                "name" => Change::Name(validate::name("sprint.name", &input.name)?),
                "goal" => Change::Goal(validate::description("sprint.goal", &input.goal)?),
                "retrospective" => Change::Retrospective(validate::description(
                    "sprint.retrospective",
                    &input.retrospective,
                )?),
                "begin_date" => {
                    Change::BeginDate(validate::date("sprint.begin_date", &input.begin_date)?)
                }
                "end_date" => Change::EndDate(validate::date("sprint.end_date", &input.end_date)?),
                other => {
                    return Err(AppError::invalid(
                        "update_mask",
                        format!("{} cannot be updated", shown(other)),
                    ));
                }
            })
        })
        .collect()
}

#[tonic::async_trait]
impl SprintService for PlanningApi {
    async fn schedule_sprint(
        &self,
        request: Request<ScheduleSprintRequest>,
    ) -> Result<Response<ScheduleSprintResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let key = Key::new(
            &tenant,
            &r.request_id,
            "agilepm.planning.v1.SprintService/ScheduleSprint",
            &r,
        );
        let new = parse_schedule(r)?;
        let response = idempotency::once(&self.db, &key, || async {
            let sprint = commands::schedule(&self.db, &tenant, new).await?;
            Ok(ScheduleSprintResponse {
                sprint: Some(sprint_message(&sprint)),
            })
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn get_sprint(
        &self,
        request: Request<GetSprintRequest>,
    ) -> Result<Response<GetSprintResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let id = validate::uuid("id", &request.get_ref().id)?.to_string();
        let mut conn = self.db.pool().acquire().await.map_err(AppError::from)?;
        let sprint = store::get(&mut conn, &tenant, &id)
            .await?
            .ok_or_else(|| AppError::not_found(format!("sprint {id}")))?;
        Ok(Response::new(GetSprintResponse {
            sprint: Some(sprint_message(&sprint)),
        }))
    }

    async fn list_sprints(
        &self,
        request: Request<ListSprintsRequest>,
    ) -> Result<Response<ListSprintsResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let page = PeriodPage {
            rpc: "agilepm.planning.v1.SprintService/ListSprints",
            tenant: &tenant,
            product_id: &r.product_id,
            page_size: r.page_size,
            page_token: &r.page_token,
            filters: &[],
        };
        let (sprints, next_page_token) = store::list(&self.db, page).await?;
        Ok(Response::new(ListSprintsResponse {
            sprints: sprints.iter().map(sprint_message).collect(),
            next_page_token,
        }))
    }

    async fn update_sprint(
        &self,
        request: Request<UpdateSprintRequest>,
    ) -> Result<Response<UpdateSprintResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let input = r
            .sprint
            .ok_or_else(|| AppError::invalid("sprint", "required"))?;
        let id = validate::uuid("sprint.id", &input.id)?.to_string();
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            return Err(AppError::invalid("update_mask", "name the fields to update").into());
        }
        let changes = parse_changes(&input, &paths)?;
        let expected = validate::expected_version("expected_version", r.expected_version)?;
        let sprint = versioned::change(
            &self.db,
            &tenant,
            &id,
            expected,
            |before| domain::update(before, &changes),
            events::updated,
        )
        .await?;
        Ok(Response::new(UpdateSprintResponse {
            sprint: Some(sprint_message(&sprint)),
        }))
    }

    async fn start_sprint(
        &self,
        request: Request<StartSprintRequest>,
    ) -> Result<Response<StartSprintResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let id = validate::uuid("id", &r.id)?.to_string();
        let expected = validate::expected_version("expected_version", r.expected_version)?;
        let sprint = versioned::change(
            &self.db,
            &tenant,
            &id,
            expected,
            domain::start,
            events::started,
        )
        .await?;
        Ok(Response::new(StartSprintResponse {
            sprint: Some(sprint_message(&sprint)),
        }))
    }

    async fn complete_sprint(
        &self,
        request: Request<CompleteSprintRequest>,
    ) -> Result<Response<CompleteSprintResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let id = validate::uuid("id", &r.id)?.to_string();
        let expected = validate::expected_version("expected_version", r.expected_version)?;
        let sprint = commands::complete(&self.db, &self.peers, &tenant, &id, expected).await?;
        Ok(Response::new(CompleteSprintResponse {
            sprint: Some(sprint_message(&sprint)),
        }))
    }

    async fn commit_backlog_item_to_sprint(
        &self,
        request: Request<CommitBacklogItemToSprintRequest>,
    ) -> Result<Response<CommitBacklogItemToSprintResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let sprint_id = validate::uuid("sprint_id", &r.sprint_id)?.to_string();
        let item_id = validate::uuid("backlog_item_id", &r.backlog_item_id)?.to_string();
        let expected_version = validate::expected_version("expected_version", r.expected_version)?;
        let backlog_item = commands::commit_item(
            &self.db,
            &self.peers,
            &tenant,
            &sprint_id,
            &item_id,
            expected_version,
        )
        .await?;
        Ok(Response::new(CommitBacklogItemToSprintResponse {
            backlog_item,
        }))
    }

    async fn uncommit_backlog_item_from_sprint(
        &self,
        request: Request<UncommitBacklogItemFromSprintRequest>,
    ) -> Result<Response<UncommitBacklogItemFromSprintResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let item_id = validate::uuid("backlog_item_id", &r.backlog_item_id)?.to_string();
        let expected_version = validate::expected_version("expected_version", r.expected_version)?;
        let backlog_item =
            commands::uncommit_item(&self.peers, &tenant, &item_id, expected_version).await?;
        Ok(Response::new(UncommitBacklogItemFromSprintResponse {
            backlog_item,
        }))
    }
}
