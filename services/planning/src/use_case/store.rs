//! Persistence of use cases, read into and written from `domain::UseCase`.

use agilepm_platform::domain::error::AppResult;
use agilepm_platform::storage::db::{Db, UnitOfWork};
use agilepm_platform::storage::keyset;
use agilepm_platform::storage::ranked::RankedList;
use agilepm_platform::storage::stored;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::domain::UseCase;

/// A product's use cases as a ranked list.
pub static USE_CASES: RankedList = agilepm_platform::ranked_list!("use_cases");

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
        state: stored::enum_value(row.try_get("state")?, "use_cases.state")?,
        version: row.try_get("version")?,
        create_time_us: row.try_get("create_time_us")?,
        update_time_us: row.try_get("update_time_us")?,
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

/// Use cases of every tenant after `after` (tenant, id), in that order, at most `limit`:
/// for recording them all again in the backlog-item service (`peer_sync`).
pub async fn all_after(db: &Db, after: &(String, String), limit: i64) -> AppResult<Vec<UseCase>> {
    let rows = keyset::rows_after(db, select_use_cases!(""), after, limit).await?;
    Ok(rows.iter().map(use_case_from).collect::<Result<_, _>>()?)
}

/// The use case a create request with `request_id` made.
pub async fn by_request_id(
    conn: &mut AnyConnection,
    tenant: &str,
    request_id: &str,
) -> AppResult<Option<UseCase>> {
    Ok(sqlx::query(select_use_cases!(
        "WHERE tenant_id = $1 AND request_id = $2"
    ))
    .bind(tenant)
    .bind(request_id)
    .fetch_optional(conn)
    .await?
    .map(|r| use_case_from(&r))
    .transpose()?)
}

/// Up to `limit` of the product's use cases in rank order after `after_rank` (retired
/// ones only if `show_retired`).
pub async fn list(
    db: &Db,
    tenant: &str,
    product_id: &str,
    after_rank: &str,
    show_retired: bool,
    limit: u32,
) -> AppResult<Vec<UseCase>> {
    let rows = sqlx::query(select_use_cases!(
        "WHERE tenant_id = $1 AND product_id = $2 AND rank > $3 AND ($4 = 1 OR state = 1) ORDER BY rank LIMIT $5"
    ))
    .bind(tenant)
    .bind(product_id)
    .bind(after_rank)
    .bind(i64::from(show_retired))
    .bind(i64::from(limit))
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .iter()
        .map(use_case_from)
        .collect::<Result<Vec<_>, _>>()?)
}

/// Inserts a new use case; a rank or request id taken meanwhile is `AlreadyExists`.
pub async fn insert(uow: &mut UnitOfWork, use_case: &UseCase, request_id: &str) -> AppResult<()> {
    sqlx::query(
        "INSERT INTO use_cases (id, tenant_id, product_id, request_id, title, value_statement, rank, state, \
         version, create_time_us, update_time_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&use_case.id)
    .bind(&use_case.tenant_id)
    .bind(&use_case.product_id)
    .bind(request_id)
    .bind(&use_case.title)
    .bind(&use_case.value_statement)
    .bind(&use_case.rank)
    .bind(i64::from(use_case.state.number()))
    .bind(use_case.version)
    .bind(use_case.create_time_us)
    .bind(use_case.update_time_us)
    .execute(uow.conn())
    .await?;
    Ok(())
}

/// Writes `use_case` if the stored version is still `read_version` (compare-and-set).
/// Returns false if another writer got there first; a rank key another move took is
/// `AlreadyExists`.
pub async fn update(
    uow: &mut UnitOfWork,
    use_case: &UseCase,
    read_version: i64,
) -> AppResult<bool> {
    let result = sqlx::query(
        "UPDATE use_cases SET title = $1, value_statement = $2, rank = $3, state = $4, version = $5, \
         update_time_us = $6 WHERE id = $7 AND version = $8",
    )
    .bind(&use_case.title)
    .bind(&use_case.value_statement)
    .bind(&use_case.rank)
    .bind(i64::from(use_case.state.number()))
    .bind(use_case.version)
    .bind(use_case.update_time_us)
    .bind(&use_case.id)
    .bind(read_version)
    .execute(uow.conn())
    .await?;
    Ok(result.rows_affected() == 1)
}
