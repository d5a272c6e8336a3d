//! Persistence of sprints, read into and written from `domain::Sprint`. The completion
//! summary is stored as its encoded protobuf message.

use agilepm_platform::domain::error::{AppError, AppResult};
use agilepm_platform::storage::db::{Db, UnitOfWork};
use agilepm_platform::storage::stored;
use agilepm_proto::planning::v1::SprintSummary;
use prost::Message as _;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::domain::Sprint;
use super::mapping::{summary_from, summary_message};
use crate::schedule::{PeriodPage, list_by_begin_date};
use crate::versioned::Versioned;

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
    let summary = summary
        .map(|bytes| {
            SprintSummary::decode(bytes.as_slice()).map_err(|error| {
                sqlx::Error::Decode(format!("sprints.summary does not decode: {error}").into())
            })
        })
        .transpose()?;
    let day = |column: &str| -> Result<_, sqlx::Error> {
        let text: String = row.try_get(column)?;
        stored::date(&text, &format!("sprints.{column}"))
    };
    Ok(Sprint {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        product_id: row.try_get("product_id")?,
        name: row.try_get("name")?,
        goal: row.try_get("goal")?,
        begin_date: day("begin_date")?,
        end_date: day("end_date")?,
        retrospective: row.try_get("retrospective")?,
        state: stored::enum_value(row.try_get("state")?, "sprints.state")?,
        summary: summary.map(summary_from),
        version: row.try_get("version")?,
        create_time_us: row.try_get("create_time_us")?,
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

/// The sprint a schedule request with `request_id` created.
pub async fn by_request_id(
    conn: &mut AnyConnection,
    tenant: &str,
    request_id: &str,
) -> AppResult<Option<Sprint>> {
    Ok(
        sqlx::query(select_sprints!("WHERE tenant_id = $1 AND request_id = $2"))
            .bind(tenant)
            .bind(request_id)
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

/// One page of a product's sprints by the day they begin, and the next page token.
pub async fn list(db: &Db, page: PeriodPage<'_>) -> AppResult<(Vec<Sprint>, String)> {
    let sql = select_sprints!(
        "WHERE tenant_id = $1 AND product_id = $2 AND (begin_date > $3 OR (begin_date = $3 AND id > $4)) ORDER BY begin_date, id LIMIT $5"
    );
    list_by_begin_date(db, sql, page, sprint_from, |sprint| {
        (sprint.begin_date.to_string(), sprint.id.clone())
    })
    .await
}

/// Inserts a new sprint.
pub async fn insert(uow: &mut UnitOfWork, sprint: &Sprint, request_id: &str) -> AppResult<()> {
    sqlx::query(
        "INSERT INTO sprints (id, tenant_id, product_id, request_id, name, goal, begin_date, end_date, retrospective, \
         state, summary, complete_time_us, version, create_time_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL, NULL, $11, $12)",
    )
    .bind(&sprint.id)
    .bind(&sprint.tenant_id)
    .bind(&sprint.product_id)
    .bind(request_id)
    .bind(&sprint.name)
    .bind(&sprint.goal)
    .bind(sprint.begin_date.to_string())
    .bind(sprint.end_date.to_string())
    .bind(&sprint.retrospective)
    .bind(i64::from(sprint.state.number()))
    .bind(sprint.version)
    .bind(sprint.create_time_us)
    .execute(uow.conn())
    .await?;
    Ok(())
}

/// Writes `sprint` if the stored version is still `read_version` (compare-and-set).
/// Returns false if another writer got there first; a second ACTIVE sprint of a product
/// is `AlreadyExists` (a unique index).
pub async fn update(uow: &mut UnitOfWork, sprint: &Sprint, read_version: i64) -> AppResult<bool> {
    let complete_time = sprint.summary.as_ref().map(|s| s.complete_time_us);
    let result = sqlx::query(
        "UPDATE sprints SET name = $1, goal = $2, begin_date = $3, end_date = $4, retrospective = $5, state = $6, \
         summary = $7, complete_time_us = $8, version = $9 WHERE id = $10 AND version = $11",
    )
    .bind(&sprint.name)
    .bind(&sprint.goal)
    .bind(sprint.begin_date.to_string())
    .bind(sprint.end_date.to_string())
    .bind(&sprint.retrospective)
    .bind(i64::from(sprint.state.number()))
    .bind(sprint.summary.as_ref().map(|s| summary_message(s).encode_to_vec()))
    .bind(complete_time)
    .bind(sprint.version)
    .bind(&sprint.id)
    .bind(read_version)
    .execute(uow.conn())
    .await?;
    Ok(result.rows_affected() == 1)
}

impl Versioned for Sprint {
    const KIND: &'static str = "sprint";

    fn version(&self) -> i64 {
        self.version
    }

    fn set_version(&mut self, version: i64, _now_us: i64) {
        self.version = version;
    }

    async fn load(conn: &mut AnyConnection, tenant: &str, id: &str) -> AppResult<Option<Sprint>> {
        get(conn, tenant, id).await
    }

    async fn store(&self, uow: &mut UnitOfWork, read_version: i64) -> AppResult<bool> {
        update(uow, self, read_version)
            .await
            .map_err(|error| match error {
                // The one unique index a change can break: one ACTIVE sprint per product.
                AppError::AlreadyExists(_) => AppError::precondition(
                    "the product already has an ACTIVE sprint; complete it first",
                ),
                other => other,
            })
    }
}
