//! The ReleaseService adapter: parse, run a command or read the store, map.

use agilepm_platform::domain::error::{AppError, AppResult, shown};
use agilepm_platform::domain::time::now_micros;
use agilepm_platform::domain::validate;
use agilepm_platform::storage::idempotency::{self, Key};
use agilepm_platform::wire::auth::caller;
use agilepm_proto::planning::v1::release_service_server::ReleaseService;
use agilepm_proto::planning::v1::*;
use tonic::{Request, Response, Status};

use super::commands::{self, NewRelease};
use super::domain::{self, Change};
use super::events;
use super::mapping::release_message;
use super::store;
use crate::PlanningApi;
use crate::schedule::PeriodPage;
use crate::versioned;

/// Checks a schedule request.
fn parse_schedule(request: ScheduleReleaseRequest) -> AppResult<NewRelease> {
    let request_id = validate::request_id("request_id", &request.request_id)?;
    let input = request
        .release
        .ok_or_else(|| AppError::invalid("release", "required"))?;
    let product_id = validate::uuid("release.product_id", &input.product_id)?.to_string();
    let name = validate::name("release.name", &input.name)?;
    let description = validate::description("release.description", &input.description)?;
    let begin_date = validate::date("release.begin_date", &input.begin_date)?;
    let end_date = validate::date("release.end_date", &input.end_date)?;
    domain::period(begin_date, end_date, "release.end_date")?;
    Ok(NewRelease {
        request_id,
        product_id,
        name,
        description,
        begin_date,
        end_date,
    })
}

/// Checks an update mask's paths against the fields of `input`.
fn parse_changes(input: &Release, paths: &[String]) -> AppResult<Vec<Change>> {
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
                "name" => Change::Name(validate::name("release.name", &input.name)?),
                "description" => Change::Description(validate::description(
                    "release.description",
                    &input.description,
                )?),
                "begin_date" => {
                    Change::BeginDate(validate::date("release.begin_date", &input.begin_date)?)
                }
                "end_date" => Change::EndDate(validate::date("release.end_date", &input.end_date)?),
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
impl ReleaseService for PlanningApi {
    async fn schedule_release(
        &self,
        request: Request<ScheduleReleaseRequest>,
    ) -> Result<Response<ScheduleReleaseResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let key = Key::new(
            &tenant,
            &r.request_id,
            "agilepm.planning.v1.ReleaseService/ScheduleRelease",
            &r,
        );
        let new = parse_schedule(r)?;
        let response = idempotency::once(&self.db, &key, || async {
            let release = commands::schedule(&self.db, &tenant, new).await?;
            Ok(ScheduleReleaseResponse {
                release: Some(release_message(&release)),
            })
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn get_release(
        &self,
        request: Request<GetReleaseRequest>,
    ) -> Result<Response<GetReleaseResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let id = validate::uuid("id", &request.get_ref().id)?.to_string();
        let mut conn = self.db.pool().acquire().await.map_err(AppError::from)?;
        let release = store::get(&mut conn, &tenant, &id)
            .await?
            .ok_or_else(|| AppError::not_found(format!("release {id}")))?;
        Ok(Response::new(GetReleaseResponse {
            release: Some(release_message(&release)),
        }))
    }

    async fn list_releases(
        &self,
        request: Request<ListReleasesRequest>,
    ) -> Result<Response<ListReleasesResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let page = PeriodPage {
            rpc: "agilepm.planning.v1.ReleaseService/ListReleases",
            tenant: &tenant,
            product_id: &r.product_id,
            page_size: r.page_size,
            page_token: &r.page_token,
            // No filter part when archived releases are hidden, as before there was a
            // choice, so tokens handed out then stay valid.
            filters: if r.show_archived {
                &["show_archived"]
            } else {
                &[]
            },
        };
        let (releases, next_page_token) = store::list(&self.db, page, r.show_archived).await?;
        Ok(Response::new(ListReleasesResponse {
            releases: releases.iter().map(release_message).collect(),
            next_page_token,
        }))
    }

    async fn update_release(
        &self,
        request: Request<UpdateReleaseRequest>,
    ) -> Result<Response<UpdateReleaseResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let input = r
            .release
            .ok_or_else(|| AppError::invalid("release", "required"))?;
        let id = validate::uuid("release.id", &input.id)?.to_string();
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let changes = parse_changes(&input, &paths)?;
        let expected = validate::expected_version("expected_version", r.expected_version)?;
        let release = versioned::change(
            &self.db,
            &tenant,
            &id,
            expected,
            |before| domain::update(before, &changes),
            events::updated,
        )
        .await?;
        Ok(Response::new(UpdateReleaseResponse {
            release: Some(release_message(&release)),
        }))
    }

    async fn archive_release(
        &self,
        request: Request<ArchiveReleaseRequest>,
    ) -> Result<Response<ArchiveReleaseResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let id = validate::uuid("id", &r.id)?.to_string();
        let expected = validate::expected_version("expected_version", r.expected_version)?;
        let now = now_micros();
        let release = versioned::change(
            &self.db,
            &tenant,
            &id,
            expected,
            |before| Ok(domain::archive(before, now)),
            events::archived,
        )
        .await?;
        Ok(Response::new(ArchiveReleaseResponse {
            release: Some(release_message(&release)),
        }))
    }

    async fn unarchive_release(
        &self,
        request: Request<UnarchiveReleaseRequest>,
    ) -> Result<Response<UnarchiveReleaseResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let id = validate::uuid("id", &r.id)?.to_string();
        let expected = validate::expected_version("expected_version", r.expected_version)?;
        let release = versioned::change(
            &self.db,
            &tenant,
            &id,
            expected,
            |before| Ok(domain::unarchive(before)),
            events::unarchived,
        )
        .await?;
        Ok(Response::new(UnarchiveReleaseResponse {
            release: Some(release_message(&release)),
        }))
    }

    async fn schedule_backlog_item_for_release(
        &self,
        request: Request<ScheduleBacklogItemForReleaseRequest>,
    ) -> Result<Response<ScheduleBacklogItemForReleaseResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let release_id = validate::uuid("release_id", &r.release_id)?.to_string();
        let item_id = validate::uuid("backlog_item_id", &r.backlog_item_id)?.to_string();
        let expected_version = validate::expected_version("expected_version", r.expected_version)?;
        let backlog_item = commands::schedule_item(
            &self.db,
            &self.peers,
            &tenant,
            &release_id,
            &item_id,
            expected_version,
        )
        .await?;
        Ok(Response::new(ScheduleBacklogItemForReleaseResponse {
            backlog_item,
        }))
    }

    async fn unschedule_backlog_item_from_release(
        &self,
        request: Request<UnscheduleBacklogItemFromReleaseRequest>,
    ) -> Result<Response<UnscheduleBacklogItemFromReleaseResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let item_id = validate::uuid("backlog_item_id", &r.backlog_item_id)?.to_string();
        let expected_version = validate::expected_version("expected_version", r.expected_version)?;
        let backlog_item =
            commands::unschedule_item(&self.peers, &tenant, &item_id, expected_version).await?;
        Ok(Response::new(UnscheduleBacklogItemFromReleaseResponse {
            backlog_item,
        }))
    }
}
