//! Releases, and scheduling backlog items for them (membership lives on the item).

use agilepm_platform::auth::{act_for, caller};
use agilepm_platform::error::{AppError, AppResult};
use agilepm_platform::outbox::{self, Subject};
use agilepm_platform::time::{now_micros, timestamp};
use agilepm_platform::validate;
use agilepm_proto::backlog::v1::{ScheduleBacklogItemRequest, UnscheduleBacklogItemRequest};
use agilepm_proto::planning::v1::release_service_server::ReleaseService;
use agilepm_proto::planning::v1::*;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::PlanningApi;
use crate::peers::backlog_error;
use crate::schedule::{PeriodPage, list_by_begin_date};

macro_rules! select_releases {
    ($rest:literal) => {
        concat!(
            "SELECT id, tenant_id, product_id, name, description, begin_date, end_date, version, create_time_us FROM releases ",
            $rest
        )
    };
}

fn release_from(row: &AnyRow) -> Result<Release, sqlx::Error> {
    Ok(Release {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        product_id: row.try_get("product_id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        begin_date: row.try_get("begin_date")?,
        end_date: row.try_get("end_date")?,
        version: row.try_get("version")?,
        create_time: Some(timestamp(row.try_get("create_time_us")?)),
    })
}

/// The release `id` of `tenant`.
pub async fn get(conn: &mut AnyConnection, tenant: &str, id: &str) -> AppResult<Option<Release>> {
    Ok(
        sqlx::query(select_releases!("WHERE id = $1 AND tenant_id = $2"))
            .bind(id)
            .bind(tenant)
            .fetch_optional(conn)
            .await?
            .map(|r| release_from(&r))
            .transpose()?,
    )
}

impl PlanningApi {
    async fn schedule_release_in(
        &self,
        tenant: &str,
        request: ScheduleReleaseRequest,
    ) -> AppResult<Release> {
        let request_id = validate::request_id("request_id", &request.request_id)?;
        let input = request
            .release
            .ok_or_else(|| AppError::invalid("release", "required"))?;
        let product_id = validate::uuid("release.product_id", &input.product_id)?.to_string();
        let name = validate::name("release.name", &input.name)?;
        let description = validate::description("release.description", &input.description)?;
        let begins = validate::date("release.begin_date", &input.begin_date)?;
        let ends = validate::date("release.end_date", &input.end_date)?;
        if ends <= begins {
            return Err(AppError::invalid(
                "release.end_date",
                "a release ends after it begins",
            ));
        }
        let mut uow = self.db.begin().await?;
        if let Some(row) = sqlx::query(select_releases!("WHERE tenant_id = $1 AND request_id = $2"))
            .bind(tenant)
            .bind(&request_id)
            .fetch_optional(uow.conn())
            .await?
        {
            return Ok(release_from(&row)?);
        }
        crate::products::require(uow.conn(), tenant, "release.product_id", &product_id).await?;
        let now = now_micros();
        let release = Release {
            id: Uuid::now_v7().to_string(),
            tenant_id: tenant.to_owned(),
            product_id,
            name,
            description,
            begin_date: begins.to_string(),
            end_date: ends.to_string(),
            version: 1,
            create_time: Some(timestamp(now)),
        };
        sqlx::query(
            "INSERT INTO releases (id, tenant_id, product_id, request_id, name, description, begin_date, end_date, \
             version, create_time_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9)",
        )
        .bind(&release.id)
        .bind(tenant)
        .bind(&release.product_id)
        .bind(&request_id)
        .bind(&release.name)
        .bind(&release.description)
        .bind(&release.begin_date)
        .bind(&release.end_date)
        .bind(now)
        .execute(uow.conn())
        .await?;
        let subject = Subject {
            aggregate_type: "Release",
            aggregate_id: &release.id,
            tenant_id: tenant,
        };
        outbox::append(
            &mut uow,
            subject,
            &ReleaseScheduled {
                release: Some(release.clone()),
            },
        )
        .await?;
        uow.commit().await?;
        Ok(release)
    }
}

#[tonic::async_trait]
impl ReleaseService for PlanningApi {
    async fn schedule_release(
        &self,
        request: Request<ScheduleReleaseRequest>,
    ) -> Result<Response<ScheduleReleaseResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let release = self
            .schedule_release_in(&tenant, request.into_inner())
            .await?;
        Ok(Response::new(ScheduleReleaseResponse {
            release: Some(release),
        }))
    }

    async fn get_release(
        &self,
        request: Request<GetReleaseRequest>,
    ) -> Result<Response<GetReleaseResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let id = validate::uuid("id", &request.get_ref().id)?.to_string();
        let mut conn = self.db.pool().acquire().await.map_err(AppError::from)?;
        let release = get(&mut conn, &tenant, &id)
            .await?
            .ok_or_else(|| AppError::not_found(format!("release {id}")))?;
        Ok(Response::new(GetReleaseResponse {
            release: Some(release),
        }))
    }

    async fn list_releases(
        &self,
        request: Request<ListReleasesRequest>,
    ) -> Result<Response<ListReleasesResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let page = PeriodPage {
            tenant: &tenant,
            product_id: &r.product_id,
            page_size: r.page_size,
            page_token: &r.page_token,
        };
        let sql = select_releases!(
            "WHERE tenant_id = $1 AND product_id = $2 AND (begin_date > $3 OR (begin_date = $3 AND id > $4)) ORDER BY begin_date, id LIMIT $5"
        );
        let (releases, next_page_token) =
            list_by_begin_date(&self.db, sql, page, release_from, |x| {
                (x.begin_date.as_str(), x.id.as_str())
            })
            .await?;
        Ok(Response::new(ListReleasesResponse {
            releases,
            next_page_token,
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
        let mut conn = self.db.pool().acquire().await.map_err(AppError::from)?;
        let release = get(&mut conn, &tenant, &release_id)
            .await?
            .ok_or_else(|| AppError::not_found(format!("release {release_id}")))?;
        drop(conn);
        self.peers
            .backlog_item_of(
                &tenant,
                &item_id,
                &release.product_id,
                &format!("release {release_id}"),
            )
            .await?;
        let request = ScheduleBacklogItemRequest {
            id: item_id,
            release_id,
            expected_version,
        };
        let item = self
            .peers
            .backlog_items
            .clone()
            .schedule_backlog_item(act_for(&tenant, request))
            .await
            .map_err(backlog_error)?;
        Ok(Response::new(ScheduleBacklogItemForReleaseResponse {
            backlog_item: item.into_inner().backlog_item,
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
        let request = UnscheduleBacklogItemRequest {
            id: item_id,
            expected_version,
        };
        let item = self
            .peers
            .backlog_items
            .clone()
            .unschedule_backlog_item(act_for(&tenant, request))
            .await
            .map_err(backlog_error)?;
        Ok(Response::new(UnscheduleBacklogItemFromReleaseResponse {
            backlog_item: item.into_inner().backlog_item,
        }))
    }
}
