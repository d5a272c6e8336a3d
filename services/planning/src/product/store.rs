//! Persistence of products, read into and written from `domain::Product`.

use agilepm_platform::domain::error::{AppError, AppResult};
use agilepm_platform::storage::db::{Db, UnitOfWork};
use agilepm_platform::storage::keyset;
use agilepm_platform::storage::stored;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::domain::Product;

macro_rules! select_products {
    ($rest:literal) => {
        concat!(
            "SELECT id, tenant_id, name, description, product_owner_id, status_transition_mode, \
             version, create_time_us, update_time_us FROM products ",
            $rest
        )
    };
}

fn product_from(row: &AnyRow) -> Result<Product, sqlx::Error> {
    Ok(Product {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        product_owner_id: row.try_get("product_owner_id")?,
        transition_mode: stored::enum_value(
            row.try_get("status_transition_mode")?,
            "products.status_transition_mode",
        )?,
        version: row.try_get("version")?,
        create_time_us: row.try_get("create_time_us")?,
        update_time_us: row.try_get("update_time_us")?,
    })
}

/// The product `id` of `tenant`.
pub async fn get(conn: &mut AnyConnection, tenant: &str, id: &str) -> AppResult<Option<Product>> {
    Ok(
        sqlx::query(select_products!("WHERE id = $1 AND tenant_id = $2"))
            .bind(id)
            .bind(tenant)
            .fetch_optional(conn)
            .await?
            .map(|r| product_from(&r))
            .transpose()?,
    )
}

/// The product `id` of `tenant`, or FAILED_PRECONDITION naming `field` (for children
/// that must belong to an existing product).
pub async fn require(
    conn: &mut AnyConnection,
    tenant: &str,
    field: &str,
    id: &str,
) -> AppResult<Product> {
    get(conn, tenant, id)
        .await?
        .ok_or_else(|| AppError::precondition(format!("{field}: product {id} does not exist")))
}

/// The product a create request with `request_id` made.
pub async fn by_request_id(
    conn: &mut AnyConnection,
    tenant: &str,
    request_id: &str,
) -> AppResult<Option<Product>> {
    Ok(
        sqlx::query(select_products!("WHERE tenant_id = $1 AND request_id = $2"))
            .bind(tenant)
            .bind(request_id)
            .fetch_optional(conn)
            .await?
            .map(|r| product_from(&r))
            .transpose()?,
    )
}

/// Up to `limit` products of `tenant` by name, after the `(name, id)` key.
pub async fn list(
    db: &Db,
    tenant: &str,
    after: &(String, String),
    limit: u32,
) -> AppResult<Vec<Product>> {
    let rows = sqlx::query(select_products!(
        "WHERE tenant_id = $1 AND (name > $2 OR (name = $2 AND id > $3)) ORDER BY name, id LIMIT $4"
    ))
    .bind(tenant)
    .bind(&after.0)
    .bind(&after.1)
    .bind(i64::from(limit))
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .iter()
        .map(product_from)
        .collect::<Result<Vec<_>, _>>()?)
}

/// Up to `limit` products of every tenant, after the `(tenant, id)` key, in that order.
pub async fn all_after(db: &Db, after: &(String, String), limit: i64) -> AppResult<Vec<Product>> {
    let rows = keyset::rows_after(db, select_products!(""), after, limit).await?;
    Ok(rows.iter().map(product_from).collect::<Result<_, _>>()?)
}

/// Inserts a new product; another of the tenant with the same name is `AlreadyExists`.
pub async fn insert(uow: &mut UnitOfWork, product: &Product, request_id: &str) -> AppResult<()> {
    sqlx::query(
        "INSERT INTO products (id, tenant_id, request_id, name, description, product_owner_id, \
         status_transition_mode, version, create_time_us, update_time_us) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&product.id)
    .bind(&product.tenant_id)
    .bind(request_id)
    .bind(&product.name)
    .bind(&product.description)
    .bind(&product.product_owner_id)
    .bind(i64::from(product.transition_mode.number()))
    .bind(product.version)
    .bind(product.create_time_us)
    .bind(product.update_time_us)
    .execute(uow.conn())
    .await?;
    Ok(())
}

/// Writes `product` if the stored version is still `read_version` (compare-and-set).
/// Returns false if another writer got there first.
pub async fn update(uow: &mut UnitOfWork, product: &Product, read_version: i64) -> AppResult<bool> {
    let result = sqlx::query(
        "UPDATE products SET name = $1, description = $2, product_owner_id = $3, status_transition_mode = $4, \
         version = $5, update_time_us = $6 WHERE id = $7 AND version = $8",
    )
    .bind(&product.name)
    .bind(&product.description)
    .bind(&product.product_owner_id)
    .bind(i64::from(product.transition_mode.number()))
    .bind(product.version)
    .bind(product.update_time_us)
    .bind(&product.id)
    .bind(read_version)
    .execute(uow.conn())
    .await?;
    Ok(result.rows_affected() == 1)
}
