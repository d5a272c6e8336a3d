//! Sprints: PLANNED -> ACTIVE -> COMPLETED (one active sprint per product), committing
//! backlog items to them (membership lives on the item), and the completion summary.

use agilepm_platform::auth::{act_for, caller};
use agilepm_platform::error::{AppError, AppResult};
use agilepm_platform::optimistic::{Attempt, check_version, retry_lost_races};
use agilepm_platform::outbox::{self, Subject};
use agilepm_platform::stored;
use agilepm_platform::time::{now_micros, timestamp};
use agilepm_platform::validate;
use agilepm_proto::backlog::v1::{
    BacklogItemStatus, CommitBacklogItemRequest, ListBacklogItemsRequest,
    UncommitBacklogItemRequest,
};
use agilepm_proto::planning::v1::sprint_service_server::SprintService;
use agilepm_proto::planning::v1::*;
use prost::Message as _;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::PlanningApi;
use crate::peers::backlog_error;
use crate::schedule::{PeriodPage, list_by_begin_date};

macro_rules! select_sprints {
    ($rest:literal) => {
        concat!(
            "SELECT id, tenant_id, product_id, name, goal, begin_date, end_date, retrospective, state, summary, \
             version, create_time_us FROM sprints ",
            $rest
        )
    };
}

fn sprint_from(row: &AnyRow) -> Result<Sprint, sqlx::Error> {
    let summary: Option<Vec<u8>> = row.try_get("summary")?;
    Ok(Sprint {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        product_id: row.try_get("product_id")?,
        name: row.try_get("name")?,
        goal: row.try_get("goal")?,
        begin_date: row.try_get("begin_date")?,
        end_date: row.try_get("end_date")?,
        retrospective: row.try_get("retrospective")?,
        state: stored::enum_value::<SprintState>(row.try_get("state")?, "sprints.state")? as i32,
        version: row.try_get("version")?,
        create_time: Some(timestamp(row.try_get("create_time_us")?)),
        summary: summary.and_then(|bytes| SprintSummary::decode(bytes.as_slice()).ok()),
    })
}

/// The sprint `id` of `tenant`.
pub async fn get(conn: &mut AnyConnection, tenant: &str, id: &str) -> AppResult<Option<Sprint>> {
    Ok(
        sqlx::query(select_sprints!("WHERE id = $1 AND tenant_id = $2"))
            .bind(id)
            .bind(tenant)
            .fetch_optional(conn)
            .await?
            .map(|r| sprint_from(&r))
            .transpose()?,
    )
}

/// The product's completed sprints, most recently completed first.
pub async fn completed(
    conn: &mut AnyConnection,
    tenant: &str,
    product_id: &str,
    limit: u32,
) -> AppResult<Vec<Sprint>> {
    let rows = sqlx::query(select_sprints!(
        "WHERE tenant_id = $1 AND product_id = $2 AND state = 3 ORDER BY complete_time_us DESC, id DESC LIMIT $3"
    ))
    .bind(tenant)
    .bind(product_id)
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await?;
    Ok(rows
        .iter()
        .map(sprint_from)
        .collect::<Result<Vec<_>, _>>()?)
}

/// Story points as a number (UNESTIMABLE and unspecified count as zero).
pub fn points(value: i32) -> i32 {
    use agilepm_proto::backlog::v1::StoryPoints as P;
    match P::try_from(value).unwrap_or(P::Unspecified) {
        P::One => 1,
        P::Two => 2,
        P::Three => 3,
        P::Five => 5,
        P::Eight => 8,
        P::Thirteen => 13,
        P::Twenty => 20,
        P::Forty => 40,
        P::OneHundred => 100,
        P::Zero | P::Unspecified | P::Unestimable => 0,
    }
}

fn state_name(state: i32) -> &'static str {
    SprintState::try_from(state).map_or("UNSPECIFIED", |s| {
        s.as_str_name().trim_start_matches("SPRINT_STATE_")
    })
}

fn validate_dates(begin: &str, end: &str) -> AppResult<(String, String)> {
    let begins = validate::date("sprint.begin_date", begin)?;
    let ends = validate::date("sprint.end_date", end)?;
    if ends < begins {
        return Err(AppError::invalid(
            "sprint.end_date",
            "a sprint ends on or after the day it begins",
        ));
    }
    Ok((begins.to_string(), ends.to_string()))
}

impl PlanningApi {
    async fn schedule_sprint_in(
        &self,
        tenant: &str,
        request: ScheduleSprintRequest,
    ) -> AppResult<Sprint> {
        let request_id = validate::request_id("request_id", &request.request_id)?;
        let input = request
            .sprint
            .ok_or_else(|| AppError::invalid("sprint", "required"))?;
        let product_id = validate::uuid("sprint.product_id", &input.product_id)?.to_string();
        let name = validate::name("sprint.name", &input.name)?;
        let goal = validate::description("sprint.goal", &input.goal)?;
        let (begin_date, end_date) = validate_dates(&input.begin_date, &input.end_date)?;
        let mut uow = self.db.begin().await?;
        if let Some(row) = sqlx::query(select_sprints!("WHERE tenant_id = $1 AND request_id = $2"))
            .bind(tenant)
            .bind(&request_id)
            .fetch_optional(uow.conn())
            .await?
        {
            return Ok(sprint_from(&row)?);
        }
        crate::products::require(uow.conn(), tenant, "sprint.product_id", &product_id).await?;
        let now = now_micros();
        let sprint = Sprint {
            id: Uuid::now_v7().to_string(),
            tenant_id: tenant.to_owned(),
            product_id,
            name,
            goal,
            begin_date,
            end_date,
            retrospective: String::new(),
            state: SprintState::Planned as i32,
            version: 1,
            create_time: Some(timestamp(now)),
            summary: None,
        };
        sqlx::query(
            "INSERT INTO sprints (id, tenant_id, product_id, request_id, name, goal, begin_date, end_date, retrospective, \
             state, summary, complete_time_us, version, create_time_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, '', $9, NULL, NULL, 1, $10)",
        )
        .bind(&sprint.id)
        .bind(tenant)
        .bind(&sprint.product_id)
        .bind(&request_id)
        .bind(&sprint.name)
        .bind(&sprint.goal)
        .bind(&sprint.begin_date)
        .bind(&sprint.end_date)
        .bind(i64::from(sprint.state))
        .bind(now)
        .execute(uow.conn())
        .await?;
        let subject = Subject {
            aggregate_type: "Sprint",
            aggregate_id: &sprint.id,
            tenant_id: tenant,
        };
        outbox::append(
            &mut uow,
            subject,
            &SprintScheduled {
                sprint: Some(sprint.clone()),
            },
        )
        .await?;
        uow.commit().await?;
        Ok(sprint)
    }

    /// Writes `after` over sprint `before` (compare-and-set) with `event`.
    async fn save_sprint<E: agilepm_proto::EventType>(
        &self,
        tenant: &str,
        id: &str,
        expected: Option<i64>,
        change: impl Fn(&Sprint) -> AppResult<Sprint>,
        event: impl Fn(&Sprint) -> E,
    ) -> AppResult<Sprint> {
        let what = format!("sprint {id}");
        retry_lost_races(&what, expected, || async {
            let mut uow = self.db.begin().await?;
            let before = get(uow.conn(), tenant, id).await?.ok_or_else(|| AppError::not_found(&what))?;
            check_version(&what, expected, before.version)?;
            let mut after = change(&before)?;
            if after == before {
                return Ok(Attempt::Done(before));
            }
            after.version = before.version + 1;
            let complete_time = after.summary.as_ref().and_then(|s| s.complete_time).map(|t| agilepm_platform::time::micros(&t));
            let updated = sqlx::query(
                "UPDATE sprints SET name = $1, goal = $2, begin_date = $3, end_date = $4, retrospective = $5, state = $6, \
                 summary = $7, complete_time_us = $8, version = $9 WHERE id = $10 AND version = $11",
            )
            .bind(&after.name)
            .bind(&after.goal)
            .bind(&after.begin_date)
            .bind(&after.end_date)
            .bind(&after.retrospective)
            .bind(i64::from(after.state))
            .bind(after.summary.as_ref().map(|s| s.encode_to_vec()))
            .bind(complete_time)
            .bind(after.version)
            .bind(id)
            .bind(before.version)
            .execute(uow.conn())
            .await;
            match updated.map_err(AppError::from) {
                Ok(result) if result.rows_affected() == 1 => {}
                Ok(_) => return Ok(Attempt::LostRace),
                Err(AppError::AlreadyExists(_)) => {
                    return Err(AppError::precondition("the product already has an ACTIVE sprint; complete it first"));
                }
                Err(other) => return Err(other),
            }
            let subject = Subject { aggregate_type: "Sprint", aggregate_id: id, tenant_id: tenant };
            outbox::append(&mut uow, subject, &event(&after)).await?;
            uow.commit().await?;
            Ok(Attempt::Done(after))
        })
        .await
    }

    /// The sprint `id`, which must accept commitments (not COMPLETED).
    async fn open_sprint(&self, tenant: &str, id: &str) -> AppResult<Sprint> {
        let mut conn = self.db.pool().acquire().await?;
        let sprint = get(&mut conn, tenant, id)
            .await?
            .ok_or_else(|| AppError::not_found(format!("sprint {id}")))?;
        if sprint.state == SprintState::Completed as i32 {
            return Err(AppError::precondition(format!("sprint {id} is COMPLETED")));
        }
        Ok(sprint)
    }
}

#[tonic::async_trait]
impl SprintService for PlanningApi {
    async fn schedule_sprint(
        &self,
        request: Request<ScheduleSprintRequest>,
    ) -> Result<Response<ScheduleSprintResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let sprint = self
            .schedule_sprint_in(&tenant, request.into_inner())
            .await?;
        Ok(Response::new(ScheduleSprintResponse {
            sprint: Some(sprint),
        }))
    }

    async fn get_sprint(
        &self,
        request: Request<GetSprintRequest>,
    ) -> Result<Response<GetSprintResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let id = validate::uuid("id", &request.get_ref().id)?.to_string();
        let mut conn = self.db.pool().acquire().await.map_err(AppError::from)?;
        let sprint = get(&mut conn, &tenant, &id)
            .await?
            .ok_or_else(|| AppError::not_found(format!("sprint {id}")))?;
        Ok(Response::new(GetSprintResponse {
            sprint: Some(sprint),
        }))
    }

    async fn list_sprints(
        &self,
        request: Request<ListSprintsRequest>,
    ) -> Result<Response<ListSprintsResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let page = PeriodPage {
            tenant: &tenant,
            product_id: &r.product_id,
            page_size: r.page_size,
            page_token: &r.page_token,
        };
        let sql = select_sprints!(
            "WHERE tenant_id = $1 AND product_id = $2 AND (begin_date > $3 OR (begin_date = $3 AND id > $4)) ORDER BY begin_date, id LIMIT $5"
        );
        let (sprints, next_page_token) =
            list_by_begin_date(&self.db, sql, page, sprint_from, |x| {
                (x.begin_date.as_str(), x.id.as_str())
            })
            .await?;
        Ok(Response::new(ListSprintsResponse {
            sprints,
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
        for path in &paths {
            match path.as_str() {
                "name" => drop(validate::name("sprint.name", &input.name)?),
                "goal" => drop(validate::description("sprint.goal", &input.goal)?),
                "retrospective" => drop(validate::description(
                    "sprint.retrospective",
                    &input.retrospective,
                )?),
                "begin_date" | "end_date" => {}
                other => {
                    return Err(AppError::invalid(
                        "update_mask",
                        format!(
                            "{} cannot be updated",
                            agilepm_platform::error::shown(other)
                        ),
                    )
                    .into());
                }
            }
        }
        let expected = validate::expected_version("expected_version", r.expected_version)?;
        let sprint = self
            .save_sprint(
                &tenant,
                &id,
                expected,
                |before| {
                    let mut after = before.clone();
                    for path in &paths {
                        match path.as_str() {
                            "name" => after.name = input.name.clone(),
                            "goal" => after.goal = input.goal.clone(),
                            "retrospective" => after.retrospective = input.retrospective.clone(),
                            "begin_date" => after.begin_date = input.begin_date.clone(),
                            _ => after.end_date = input.end_date.clone(),
                        }
                    }
                    if (after.begin_date != before.begin_date || after.end_date != before.end_date)
                        && before.state == SprintState::Completed as i32
                    {
                        return Err(AppError::precondition(
                            "a COMPLETED sprint's dates cannot change",
                        ));
                    }
                    let (begin_date, end_date) =
                        validate_dates(&after.begin_date, &after.end_date)?;
                    Ok(Sprint {
                        begin_date,
                        end_date,
                        ..after
                    })
                },
                |after| SprintUpdated {
                    sprint: Some(after.clone()),
                },
            )
            .await?;
        Ok(Response::new(UpdateSprintResponse {
            sprint: Some(sprint),
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
        let sprint = self
            .save_sprint(
                &tenant,
                &id,
                expected,
                |before| match SprintState::try_from(before.state) {
                    Ok(SprintState::Planned) => Ok(Sprint {
                        state: SprintState::Active as i32,
                        ..before.clone()
                    }),
                    _ => Err(AppError::precondition(format!(
                        "only PLANNED sprints can start (this one is {})",
                        state_name(before.state)
                    ))),
                },
                |after| SprintStarted {
                    sprint_id: after.id.clone(),
                    tenant_id: after.tenant_id.clone(),
                    product_id: after.product_id.clone(),
                },
            )
            .await?;
        Ok(Response::new(StartSprintResponse {
            sprint: Some(sprint),
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
        let current = {
            let mut conn = self.db.pool().acquire().await.map_err(AppError::from)?;
            get(&mut conn, &tenant, &id)
                .await?
                .ok_or_else(|| AppError::not_found(format!("sprint {id}")))?
        };
        if current.state != SprintState::Active as i32 {
            return Err(AppError::precondition(format!(
                "only ACTIVE sprints can complete (this one is {})",
                state_name(current.state)
            ))
            .into());
        }
        // The items committed to the sprint, as the backlog-item service records them.
        let filter = ListBacklogItemsRequest {
            product_id: current.product_id.clone(),
            sprint_id: id.clone(),
            ..Default::default()
        };
        let items = self.peers.all_backlog_items(&tenant, filter).await?;
        let summary = SprintSummary {
            done_backlog_item_ids: items
                .iter()
                .filter(|i| i.status == BacklogItemStatus::Done as i32)
                .map(|i| i.id.clone())
                .collect(),
            unfinished_backlog_item_ids: items
                .iter()
                .filter(|i| i.status == BacklogItemStatus::Committed as i32)
                .map(|i| i.id.clone())
                .collect(),
            story_points_done: items
                .iter()
                .filter(|i| i.status == BacklogItemStatus::Done as i32)
                .map(|i| points(i.story_points))
                .sum(),
            complete_time: Some(timestamp(now_micros())),
        };
        let sprint = self
            .save_sprint(
                &tenant,
                &id,
                expected,
                |before| match SprintState::try_from(before.state) {
                    Ok(SprintState::Active) => Ok(Sprint {
                        state: SprintState::Completed as i32,
                        summary: Some(summary.clone()),
                        ..before.clone()
                    }),
                    _ => Err(AppError::precondition(format!(
                        "only ACTIVE sprints can complete (this one is {})",
                        state_name(before.state)
                    ))),
                },
                |after| SprintCompleted {
                    sprint: Some(after.clone()),
                },
            )
            .await?;
        Ok(Response::new(CompleteSprintResponse {
            sprint: Some(sprint),
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
        let sprint = self.open_sprint(&tenant, &sprint_id).await?;
        self.peers
            .backlog_item_of(
                &tenant,
                &item_id,
                &sprint.product_id,
                &format!("sprint {sprint_id}"),
            )
            .await?;
        let request = CommitBacklogItemRequest {
            id: item_id,
            sprint_id,
            expected_version,
        };
        let item = self
            .peers
            .backlog_items
            .clone()
            .commit_backlog_item(act_for(&tenant, request))
            .await
            .map_err(backlog_error)?;
        Ok(Response::new(CommitBacklogItemToSprintResponse {
            backlog_item: item.into_inner().backlog_item,
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
        let request = UncommitBacklogItemRequest {
            id: item_id,
            expected_version,
        };
        let item = self
            .peers
            .backlog_items
            .clone()
            .uncommit_backlog_item(act_for(&tenant, request))
            .await
            .map_err(backlog_error)?;
        Ok(Response::new(UncommitBacklogItemFromSprintResponse {
            backlog_item: item.into_inner().backlog_item,
        }))
    }
}
