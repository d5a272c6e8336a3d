//! Reading a table of every tenant page by page in its `(tenant_id, id)` key order: how a
//! service records all of its rows again in a peer when it starts (planning's
//! `peer_sync`), resuming after the last key recorded.

use sqlx::any::AnyRow;

use crate::domain::error::AppResult;
use crate::storage::db::Db;
use crate::storage::statement::Statement;

/// The rows `select` (`SELECT columns FROM table`, a table keyed by `tenant_id` and `id`)
/// reads after the key `after` (tenant, id), in key order, `limit` at most.
pub async fn rows_after(
    db: &Db,
    select: &str,
    after: &(String, String),
    limit: i64,
) -> AppResult<Vec<AnyRow>> {
    let mut statement = Statement::new(db.engine());
    statement
        .sql(select)
        .sql(" WHERE tenant_id > ")
        .placeholder()
        .sql(" OR (tenant_id = ")
        .placeholder()
        .sql(" AND id > ")
        .placeholder()
        .sql(") ORDER BY tenant_id, id LIMIT ")
        .placeholder()
        .bind(after.0.clone())
        .bind(after.0.clone())
        .bind(after.1.clone())
        .bind(limit);
    Ok(statement.query()?.fetch_all(db.pool()).await?)
}
