//! Persistence of releases, read into and written from `domain::Release`.

use agilepm_platform::domain::error::AppResult;
use agilepm_platform::storage::db::{Db, UnitOfWork};
use agilepm_platform::storage::stored;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::domain::Release;
use crate::schedule::{PeriodPage, list_by_begin_date};
use crate::versioned::Versioned;

macro_rules! select_releases {
    ($rest:literal) => {
        concat!(
            "SELECT id, tenant_id, product_id, name, description, begin_date, end_date, version, \
             create_time_us, update_time_us, archive_time_us FROM releases ",
            $rest
        )
    };
}

fn release_from(row: &AnyRow) -> Result<Release, sqlx::Error> {
    let day = |column: &str| -> Result<_, sqlx::Error> {
        let text: String = row.try_get(column)?;
        stored::date(&text, &format!("releases.{column}"))
    };
    Ok(Release {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        product_id: row.try_get("product_id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        begin_date: day("begin_date")?,
        end_date: day("end_date")?,
        version: row.try_get("version")?,
        create_time_us: row.try_get("create_time_us")?,
        update_time_us: row.try_get("update_time_us")?,
        archive_time_us: row.try_get("archive_time_us")?,
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

/// The release a schedule request with `request_id` created.
pub async fn by_request_id(
    conn: &mut AnyConnection,
    tenant: &str,
    request_id: &str,
) -> AppResult<Option<Release>> {
    Ok(
        sqlx::query(select_releases!("WHERE tenant_id = $1 AND request_id = $2"))
            .bind(tenant)
            .bind(request_id)
            .fetch_optional(conn)
            .await?
            .map(|r| release_from(&r))
            .transpose()?,
    )
}

/// One page of a product's releases by the day they begin (archived ones too if
/// `show_archived`), and the next page token.
pub async fn list(
    db: &Db,
    page: PeriodPage<'_>,
    show_archived: bool,
) -> AppResult<(Vec<Release>, String)> {
    let sql = if show_archived {
        select_releases!(
            "WHERE tenant_id = $1 AND product_id = $2 AND (begin_date > $3 OR (begin_date = $3 AND id > $4)) ORDER BY begin_date, id LIMIT $5"
        )
    } else {
        select_releases!(
            "WHERE tenant_id = $1 AND product_id = $2 AND archive_time_us IS NULL AND (begin_date > $3 OR (begin_date = $3 AND id > $4)) ORDER BY begin_date, id LIMIT $5"
        )
    };
    list_by_begin_date(db, sql, page, release_from, |release| {
        (release.begin_date.to_string(), release.id.clone())
    })
    .await
}

/// Inserts a new release.
pub async fn insert(uow: &mut UnitOfWork, release: &Release, request_id: &str) -> AppResult<()> {
    sqlx::query(
        "INSERT INTO releases (id, tenant_id, product_id, request_id, name, description, begin_date, end_date, \
         version, create_time_us, update_time_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&release.id)
    .bind(&release.tenant_id)
    .bind(&release.product_id)
    .bind(request_id)
    .bind(&release.name)
    .bind(&release.description)
    .bind(release.begin_date.to_string())
    .bind(release.end_date.to_string())
    .bind(release.version)
    .bind(release.create_time_us)
    .bind(release.update_time_us)
    .execute(uow.conn())
    .await?;
    Ok(())
}

/// Writes `release` over the row last read at `read_version`; false if it has changed
/// since (a lost race).
pub async fn update(uow: &mut UnitOfWork, release: &Release, read_version: i64) -> AppResult<bool> {
    let result = sqlx::query(
        "UPDATE releases SET name = $1, description = $2, begin_date = $3, end_date = $4, \
         version = $5, update_time_us = $6, archive_time_us = $7 WHERE id = $8 AND version = $9",
    )
    .bind(&release.name)
    .bind(&release.description)
    .bind(release.begin_date.to_string())
    .bind(release.end_date.to_string())
    .bind(release.version)
    .bind(release.update_time_us)
    .bind(release.archive_time_us)
    .bind(&release.id)
    .bind(read_version)
    .execute(uow.conn())
    .await?;
    Ok(result.rows_affected() == 1)
}

impl Versioned for Release {
    const KIND: &'static str = "release";

    fn version(&self) -> i64 {
        self.version
    }

    fn set_version(&mut self, version: i64, now_us: i64) {
        self.version = version;
        self.update_time_us = now_us;
    }

    async fn load(conn: &mut AnyConnection, tenant: &str, id: &str) -> AppResult<Option<Release>> {
        get(conn, tenant, id).await
    }

    async fn store(&self, uow: &mut UnitOfWork, read_version: i64) -> AppResult<bool> {
        update(uow, self, read_version).await
    }
}
