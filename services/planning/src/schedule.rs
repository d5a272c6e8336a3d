//! What releases and sprints share: both are scheduled periods of a product, listed by
//! the day they begin.

use agilepm_platform::domain::error::{AppError, AppResult};
use agilepm_platform::domain::{paging, validate};
use agilepm_platform::storage::db::Db;
use sqlx::any::AnyRow;

/// A listing request of a product's periods.
pub struct PeriodPage<'a> {
    /// The RPC listing them (its full method name), which its page tokens are bound to.
    pub rpc: &'static str,
    /// Tenant.
    pub tenant: &'a str,
    /// `product_id` request field.
    pub product_id: &'a str,
    /// `page_size` request field.
    pub page_size: i32,
    /// `page_token` request field.
    pub page_token: &'a str,
    /// The other request fields that pick the rows (a page token is bound to them).
    pub filters: &'a [&'a str],
}

/// One page of `sql` (a SELECT taking tenant, product, after-date, after-id and limit,
/// ordered by `begin_date, id`), mapped by `from_row`; returns the rows and the next
/// page token.
pub async fn list_by_begin_date<T>(
    db: &Db,
    sql: &'static str,
    page: PeriodPage<'_>,
    from_row: fn(&AnyRow) -> Result<T, sqlx::Error>,
    begin_date_and_id: fn(&T) -> (String, String),
) -> AppResult<(Vec<T>, String)> {
    let product_id = validate::uuid("product_id", page.product_id)?.to_string();
    let size = validate::page_size("page_size", page.page_size, 100, 1000)?;
    let mut bound = vec![page.tenant, product_id.as_str()];
    bound.extend_from_slice(page.filters);
    let query = paging::PageQuery::new(page.rpc, &bound);
    let (after_date, after_id) =
        paging::decode_pair("page_token", page.page_token, &query)?.unwrap_or_default();
    let rows = sqlx::query(sql)
        .bind(page.tenant)
        .bind(&product_id)
        .bind(&after_date)
        .bind(&after_id)
        .bind(i64::from(size) + 1)
        .fetch_all(db.pool())
        .await?;
    let items = rows
        .iter()
        .map(from_row)
        .collect::<Result<Vec<_>, _>>()
        .map_err(AppError::from)?;
    Ok(paging::finish_page(items, size, &query, |item| {
        let (date, id) = begin_date_and_id(item);
        format!("{date}|{id}")
    }))
}
