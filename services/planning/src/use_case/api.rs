//! The UseCaseService adapter: parse, run a command or read the store, map.

use agilepm_platform::domain::error::{AppError, AppResult, shown};
use agilepm_platform::domain::{paging, validate};
use agilepm_platform::storage::idempotency::{self, Key};
use agilepm_platform::wire::auth::caller;
use agilepm_proto::planning::v1::use_case_service_server::UseCaseService;
use agilepm_proto::planning::v1::*;
use tonic::{Request, Response, Status};

use super::commands::{self, Change, NewUseCase};
use super::domain;
use super::mapping::use_case_message;
use super::store;
use crate::PlanningApi;

/// Checks a create request.
fn parse_create(request: CreateUseCaseRequest) -> AppResult<NewUseCase> {
    let request_id = validate::request_id("request_id", &request.request_id)?;
    let input = request
        .use_case
        .ok_or_else(|| AppError::invalid("use_case", "required"))?;
    Ok(NewUseCase {
        request_id,
        product_id: validate::uuid("use_case.product_id", &input.product_id)?.to_string(),
        title: validate::name("use_case.title", &input.title)?,
        value_statement: validate::description("use_case.value_statement", &input.value_statement)?,
    })
}

/// Checks an update mask's paths against the fields of `input`.
fn parse_changes(input: &UseCase, paths: &[String]) -> AppResult<Vec<domain::Change>> {
    paths
        .iter()
        .map(|path| {
            Ok(match path.as_str() {
                "title" => domain::Change::Title(validate::name("use_case.title", &input.title)?),
                "value_statement" => domain::Change::ValueStatement(validate::description(
                    "use_case.value_statement",
                    &input.value_statement,
                )?),
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

/// Checks a rank request's anchor.
fn parse_rank(id: &str, anchor: Option<&rank_use_case_request::Anchor>) -> AppResult<Change> {
    let (anchor_id, before) = match anchor {
        Some(rank_use_case_request::Anchor::BeforeId(a)) => {
            (validate::uuid("before_id", a)?.to_string(), true)
        }
        Some(rank_use_case_request::Anchor::AfterId(a)) => {
            (validate::uuid("after_id", a)?.to_string(), false)
        }
        None => return Err(AppError::invalid("anchor", "name before_id or after_id")),
    };
    if anchor_id == id {
        return Err(AppError::invalid(
            "anchor",
            "a use case cannot move relative to itself",
        ));
    }
    Ok(Change::Rank { anchor_id, before })
}

#[tonic::async_trait]
impl UseCaseService for PlanningApi {
    async fn create_use_case(
        &self,
        request: Request<CreateUseCaseRequest>,
    ) -> Result<Response<CreateUseCaseResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let key = Key::new(
            &tenant,
            &r.request_id,
            "agilepm.planning.v1.UseCaseService/CreateUseCase",
            &r,
        );
        let new = parse_create(r)?;
        let response = idempotency::once(&self.db, &key, || async {
            let use_case = commands::create(&self.db, &self.peers, &tenant, new).await?;
            Ok(CreateUseCaseResponse {
                use_case: Some(use_case_message(&use_case)),
            })
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn get_use_case(
        &self,
        request: Request<GetUseCaseRequest>,
    ) -> Result<Response<GetUseCaseResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let id = validate::uuid("id", &request.get_ref().id)?.to_string();
        let mut conn = self.db.pool().acquire().await.map_err(AppError::from)?;
        let use_case = store::get(&mut conn, &tenant, &id)
            .await?
            .ok_or_else(|| AppError::not_found(format!("use case {id}")))?;
        Ok(Response::new(GetUseCaseResponse {
            use_case: Some(use_case_message(&use_case)),
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
        let retired = if r.show_retired {
            "with retired"
        } else {
            "live"
        };
        let query = paging::PageQuery::new(
            "agilepm.planning.v1.UseCaseService/ListUseCases",
            &[&tenant, &product_id, retired],
        );
        let after = paging::decode_token("page_token", &r.page_token, &query)?.unwrap_or_default();
        let use_cases = store::list(
            &self.db,
            &tenant,
            &product_id,
            &after,
            r.show_retired,
            size + 1,
        )
        .await?;
        let (use_cases, next_page_token) =
            paging::finish_page(use_cases, size, &query, |u| u.rank.clone());
        Ok(Response::new(ListUseCasesResponse {
            use_cases: use_cases.iter().map(use_case_message).collect(),
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
        let change = Change::Fields(parse_changes(&input, &paths)?);
        let expected = validate::expected_version("expected_version", r.expected_version)?;
        let use_case = commands::change(&self.db, &tenant, &id, expected, &change).await?;
        Ok(Response::new(UpdateUseCaseResponse {
            use_case: Some(use_case_message(&use_case)),
        }))
    }

    async fn rank_use_case(
        &self,
        request: Request<RankUseCaseRequest>,
    ) -> Result<Response<RankUseCaseResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let id = validate::uuid("id", &r.id)?.to_string();
        let change = parse_rank(&id, r.anchor.as_ref())?;
        let expected = validate::expected_version("expected_version", r.expected_version)?;
        let use_case = commands::change(&self.db, &tenant, &id, expected, &change).await?;
        Ok(Response::new(RankUseCaseResponse {
            use_case: Some(use_case_message(&use_case)),
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
        let use_case = commands::change(&self.db, &tenant, &id, expected, &Change::Retire).await?;
        Ok(Response::new(RetireUseCaseResponse {
            use_case: Some(use_case_message(&use_case)),
        }))
    }
}
