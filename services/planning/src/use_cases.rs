//! Use cases: the product owner's scope, ranked within a product, retired when out of scope.

use agilepm_platform::auth::caller;
use agilepm_platform::error::{AppError, AppResult};
use agilepm_platform::optimistic::{Attempt, check_version, retry_lost_races};
use agilepm_platform::outbox::{self, Subject};
use agilepm_platform::ranked::{Anchor, RankedList};
use agilepm_platform::stored;
use agilepm_platform::time::{now_micros, timestamp};
use agilepm_platform::{paging, validate};
use agilepm_proto::planning::v1::use_case_service_server::UseCaseService;
use agilepm_proto::planning::v1::*;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::PlanningApi;

/// A product's use cases as a ranked list.
static USE_CASES: RankedList = agilepm_platform::ranked_list!("use_cases");

macro_rules! select_use_cases {
    ($rest:literal) => {
        concat!(
            "SELECT id, tenant_id, product_id, title, value_statement, rank, state, version, \
             create_time_us, update_time_us FROM use_cases ",
            $rest
        )
    };
}

fn use_case_from(row: &AnyRow) -> Result<UseCase, sqlx::Error> {
    Ok(UseCase {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        product_id: row.try_get("product_id")?,
        title: row.try_get("title")?,
        value_statement: row.try_get("value_statement")?,
        rank: row.try_get("rank")?,
        state: stored::enum_value::<UseCaseState>(row.try_get("state")?, "use_cases.state")? as i32,
        version: row.try_get("version")?,
        create_time: Some(timestamp(row.try_get("create_time_us")?)),
        update_time: Some(timestamp(row.try_get("update_time_us")?)),
    })
}

/// The use case `id` of `tenant`.
pub async fn get(conn: &mut AnyConnection, tenant: &str, id: &str) -> AppResult<Option<UseCase>> {
    Ok(
        sqlx::query(select_use_cases!("WHERE id = $1 AND tenant_id = $2"))
            .bind(id)
            .bind(tenant)
            .fetch_optional(conn)
            .await?
            .map(|r| use_case_from(&r))
            .transpose()?,
    )
}

/// A change to a use case.
enum Change {
    /// New title and/or value statement.
    Fields {
        title: Option<String>,
        value_statement: Option<String>,
    },
    /// Move directly before (`true`) or after (`false`) another use case.
    Rank { anchor: String, before_anchor: bool },
    /// Take out of scope.
    Retire,
}

async fn apply(
    conn: &mut AnyConnection,
    tenant: &str,
    before: &UseCase,
    change: &Change,
) -> AppResult<UseCase> {
    match change {
        Change::Fields {
            title,
            value_statement,
        } => Ok(UseCase {
            title: title.clone().unwrap_or_else(|| before.title.clone()),
            value_statement: value_statement
                .clone()
                .unwrap_or_else(|| before.value_statement.clone()),
            ..before.clone()
        }),
        Change::Retire => Ok(UseCase {
            state: UseCaseState::Retired as i32,
            ..before.clone()
        }),
        Change::Rank {
            anchor,
            before_anchor,
        } => {
            let anchor_case = get(conn, tenant, anchor)
                .await?
                .ok_or_else(|| AppError::not_found(format!("use case {anchor}")))?;
            if anchor_case.product_id != before.product_id {
                return Err(AppError::precondition(
                    "use cases can only be ranked within their own product",
                ));
            }
            let place = Anchor {
                id: anchor,
                rank: &anchor_case.rank,
                before: *before_anchor,
            };
            let new_rank = USE_CASES
                .key_next_to(
                    conn,
                    &before.tenant_id,
                    &before.product_id,
                    &before.id,
                    place,
                )
                .await?;
            Ok(UseCase {
                rank: new_rank,
                ..before.clone()
            })
        }
    }
}

impl PlanningApi {
    async fn create_use_case_in(
        &self,
        tenant: &str,
        request: CreateUseCaseRequest,
    ) -> AppResult<UseCase> {
        let request_id = validate::request_id("request_id", &request.request_id)?;
        let input = request
            .use_case
            .ok_or_else(|| AppError::invalid("use_case", "required"))?;
        let product_id = validate::uuid("use_case.product_id", &input.product_id)?.to_string();
        let title = validate::name("use_case.title", &input.title)?;
        let value_statement =
            validate::description("use_case.value_statement", &input.value_statement)?;
        for _ in 0..agilepm_platform::optimistic::MAX_ATTEMPTS {
            let mut uow = self.db.begin().await?;
            if let Some(row) = sqlx::query(select_use_cases!(
                "WHERE tenant_id = $1 AND request_id = $2"
            ))
            .bind(tenant)
            .bind(&request_id)
            .fetch_optional(uow.conn())
            .await?
            {
                return Ok(use_case_from(&row)?);
            }
            crate::products::require(uow.conn(), tenant, "use_case.product_id", &product_id)
                .await?;
            let rank = USE_CASES
                .key_at_end(uow.conn(), tenant, &product_id)
                .await?;
            let now = now_micros();
            let use_case = UseCase {
                id: Uuid::now_v7().to_string(),
                tenant_id: tenant.to_owned(),
                product_id: product_id.clone(),
                title: title.clone(),
                value_statement: value_statement.clone(),
                rank,
                state: UseCaseState::Active as i32,
                version: 1,
                create_time: Some(timestamp(now)),
                update_time: Some(timestamp(now)),
            };
            let inserted = sqlx::query(
                "INSERT INTO use_cases (id, tenant_id, product_id, request_id, title, value_statement, rank, state, \
                 version, create_time_us, update_time_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $9)",
            )
            .bind(&use_case.id)
            .bind(tenant)
            .bind(&product_id)
            .bind(&request_id)
            .bind(&use_case.title)
            .bind(&use_case.value_statement)
            .bind(&use_case.rank)
            .bind(i64::from(use_case.state))
            .bind(now)
            .execute(uow.conn())
            .await;
            match inserted.map_err(AppError::from) {
                Ok(_) => {}
                Err(AppError::AlreadyExists(_)) => continue,
                Err(other) => return Err(other),
            }
            let subject = Subject {
                aggregate_type: "UseCase",
                aggregate_id: &use_case.id,
                tenant_id: tenant,
            };
            outbox::append(
                &mut uow,
                subject,
                &UseCaseCreated {
                    use_case: Some(use_case.clone()),
                },
            )
            .await?;
            uow.commit().await?;
            return Ok(use_case);
        }
        Err(AppError::Aborted(
            "the product's use cases are being changed by many writers; retry".into(),
        ))
    }

    /// Applies `change` to use case `id` (compare-and-set), emitting `UseCaseUpdated`.
    async fn change_use_case(
        &self,
        tenant: &str,
        id: &str,
        expected: Option<i64>,
        change: &Change,
    ) -> AppResult<UseCase> {
        let what = format!("use case {id}");
        retry_lost_races(&what, expected, || async {
            let mut uow = self.db.begin().await?;
            let before = get(uow.conn(), tenant, id).await?.ok_or_else(|| AppError::not_found(&what))?;
            check_version(&what, expected, before.version)?;
            let mut after = apply(uow.conn(), tenant, &before, change).await?;
            if after == before {
                return Ok(Attempt::Done(before));
            }
            let now = now_micros();
            after.version = before.version + 1;
            after.update_time = Some(timestamp(now));
            let updated = sqlx::query(
                "UPDATE use_cases SET title = $1, value_statement = $2, rank = $3, state = $4, version = $5, \
                 update_time_us = $6 WHERE id = $7 AND version = $8",
            )
            .bind(&after.title)
            .bind(&after.value_statement)
            .bind(&after.rank)
            .bind(i64::from(after.state))
            .bind(after.version)
            .bind(now)
            .bind(id)
            .bind(before.version)
            .execute(uow.conn())
            .await;
            match updated.map_err(AppError::from) {
                Ok(result) if result.rows_affected() == 1 => {}
                // Lost the version race, or another move took the same rank key.
                Ok(_) | Err(AppError::AlreadyExists(_)) => return Ok(Attempt::LostRace),
                Err(other) => return Err(other),
            }
            let subject = Subject { aggregate_type: "UseCase", aggregate_id: id, tenant_id: tenant };
            outbox::append(&mut uow, subject, &UseCaseUpdated { use_case: Some(after.clone()) }).await?;
            uow.commit().await?;
            Ok(Attempt::Done(after))
        })
        .await
    }
}

#[tonic::async_trait]
impl UseCaseService for PlanningApi {
    async fn create_use_case(
        &self,
        request: Request<CreateUseCaseRequest>,
    ) -> Result<Response<CreateUseCaseResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let use_case = self
            .create_use_case_in(&tenant, request.into_inner())
            .await?;
        Ok(Response::new(CreateUseCaseResponse {
            use_case: Some(use_case),
        }))
    }

    async fn get_use_case(
        &self,
        request: Request<GetUseCaseRequest>,
    ) -> Result<Response<GetUseCaseResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let id = validate::uuid("id", &request.get_ref().id)?.to_string();
        let mut conn = self.db.pool().acquire().await.map_err(AppError::from)?;
        let use_case = get(&mut conn, &tenant, &id)
            .await?
            .ok_or_else(|| AppError::not_found(format!("use case {id}")))?;
        Ok(Response::new(GetUseCaseResponse {
            use_case: Some(use_case),
        }))
    }

    async fn list_use_cases(
        &self,
        request: Request<ListUseCasesRequest>,
    ) -> Result<Response<ListUseCasesResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let product_id = validate::uuid("product_id", &r.product_id)?.to_string();
        let size = validate::page_size("page_size", r.page_size, 100, 1000)?;
        let after = paging::decode_token("page_token", &r.page_token)?.unwrap_or_default();
        let rows = sqlx::query(select_use_cases!(
            "WHERE tenant_id = $1 AND product_id = $2 AND rank > $3 AND ($4 = 1 OR state = 1) ORDER BY rank LIMIT $5"
        ))
        .bind(&tenant)
        .bind(&product_id)
        .bind(&after)
        .bind(i64::from(r.show_retired))
        .bind(i64::from(size) + 1)
        .fetch_all(self.db.pool())
        .await
        .map_err(AppError::from)?;
        let use_cases = rows
            .iter()
            .map(use_case_from)
            .collect::<Result<Vec<_>, _>>()
            .map_err(AppError::from)?;
        let (use_cases, next_page_token) = paging::finish_page(use_cases, size, |u| u.rank.clone());
        Ok(Response::new(ListUseCasesResponse {
            use_cases,
            next_page_token,
        }))
    }

    async fn update_use_case(
        &self,
        request: Request<UpdateUseCaseRequest>,
    ) -> Result<Response<UpdateUseCaseResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let input = r
            .use_case
            .ok_or_else(|| AppError::invalid("use_case", "required"))?;
        let id = validate::uuid("use_case.id", &input.id)?.to_string();
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            return Err(AppError::invalid("update_mask", "name the fields to update").into());
        }
        let mut title = None;
        let mut value_statement = None;
        for path in &paths {
            match path.as_str() {
                "title" => title = Some(validate::name("use_case.title", &input.title)?),
                "value_statement" => {
                    value_statement = Some(validate::description(
                        "use_case.value_statement",
                        &input.value_statement,
                    )?)
                }
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
        let use_case = self
            .change_use_case(
                &tenant,
                &id,
                expected,
                &Change::Fields {
                    title,
                    value_statement,
                },
            )
            .await?;
        Ok(Response::new(UpdateUseCaseResponse {
            use_case: Some(use_case),
        }))
    }

    async fn rank_use_case(
        &self,
        request: Request<RankUseCaseRequest>,
    ) -> Result<Response<RankUseCaseResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let id = validate::uuid("id", &r.id)?.to_string();
        let (anchor, before_anchor) = match &r.anchor {
            Some(rank_use_case_request::Anchor::BeforeId(a)) => {
                (validate::uuid("before_id", a)?.to_string(), true)
            }
            Some(rank_use_case_request::Anchor::AfterId(a)) => {
                (validate::uuid("after_id", a)?.to_string(), false)
            }
            None => return Err(AppError::invalid("anchor", "name before_id or after_id").into()),
        };
        if anchor == id {
            return Err(
                AppError::invalid("anchor", "a use case cannot move relative to itself").into(),
            );
        }
        let expected = validate::expected_version("expected_version", r.expected_version)?;
        let use_case = self
            .change_use_case(
                &tenant,
                &id,
                expected,
                &Change::Rank {
                    anchor,
                    before_anchor,
                },
            )
            .await?;
        Ok(Response::new(RankUseCaseResponse {
            use_case: Some(use_case),
        }))
    }

    async fn retire_use_case(
        &self,
        request: Request<RetireUseCaseRequest>,
    ) -> Result<Response<RetireUseCaseResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let id = validate::uuid("id", &r.id)?.to_string();
        let expected = validate::expected_version("expected_version", r.expected_version)?;
        let use_case = self
            .change_use_case(&tenant, &id, expected, &Change::Retire)
            .await?;
        Ok(Response::new(RetireUseCaseResponse {
            use_case: Some(use_case),
        }))
    }
}
