//! Products: create, read, list, update, including the status transition mode.

use agilepm_platform::auth::caller;
use agilepm_platform::error::{AppError, AppResult};
use agilepm_platform::optimistic::{Attempt, check_version, retry_lost_races};
use agilepm_platform::outbox::{self, Subject};
use agilepm_platform::stored;
use agilepm_platform::time::{now_micros, timestamp};
use agilepm_platform::{paging, validate};
use agilepm_proto::common::v1::StatusTransitionMode;
use agilepm_proto::planning::v1::product_service_server::ProductService;
use agilepm_proto::planning::v1::*;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::PlanningApi;

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
        status_transition_mode: stored::enum_value::<StatusTransitionMode>(
            row.try_get("status_transition_mode")?,
            "products.status_transition_mode",
        )? as i32,
        version: row.try_get("version")?,
        create_time: Some(timestamp(row.try_get("create_time_us")?)),
        update_time: Some(timestamp(row.try_get("update_time_us")?)),
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

fn mode(field: &str, value: i32) -> AppResult<StatusTransitionMode> {
    match StatusTransitionMode::try_from(value) {
        Ok(StatusTransitionMode::Unspecified) => Ok(StatusTransitionMode::Automatic),
        Ok(mode) => Ok(mode),
        Err(_) => Err(AppError::invalid(field, format!("unknown mode {value}"))),
    }
}

impl PlanningApi {
    async fn create_product_in(
        &self,
        tenant: &str,
        request: CreateProductRequest,
    ) -> AppResult<Product> {
        let request_id = validate::request_id("request_id", &request.request_id)?;
        let input = request
            .product
            .ok_or_else(|| AppError::invalid("product", "required"))?;
        let now = now_micros();
        let product = Product {
            id: Uuid::now_v7().to_string(),
            tenant_id: tenant.to_owned(),
            name: validate::name("product.name", &input.name)?,
            description: validate::description("product.description", &input.description)?,
            product_owner_id: validate::member_id(
                "product.product_owner_id",
                &input.product_owner_id,
            )?
            .unwrap_or_default(),
            status_transition_mode: mode(
                "product.status_transition_mode",
                input.status_transition_mode,
            )? as i32,
            version: 1,
            create_time: Some(timestamp(now)),
            update_time: Some(timestamp(now)),
        };
        let mut uow = self.db.begin().await?;
        if let Some(existing) =
            sqlx::query(select_products!("WHERE tenant_id = $1 AND request_id = $2"))
                .bind(tenant)
                .bind(&request_id)
                .fetch_optional(uow.conn())
                .await?
        {
            return Ok(product_from(&existing)?);
        }
        sqlx::query(
            "INSERT INTO products (id, tenant_id, request_id, name, description, product_owner_id, \
             status_transition_mode, version, create_time_us, update_time_us) VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $8)",
        )
        .bind(&product.id)
        .bind(tenant)
        .bind(&request_id)
        .bind(&product.name)
        .bind(&product.description)
        .bind(&product.product_owner_id)
        .bind(i64::from(product.status_transition_mode))
        .bind(now)
        .execute(uow.conn())
        .await
        .map_err(|e| match AppError::from(e) {
            AppError::AlreadyExists(_) => AppError::AlreadyExists(format!("a product named {:?} exists already", product.name)),
            other => other,
        })?;
        let subject = Subject {
            aggregate_type: "Product",
            aggregate_id: &product.id,
            tenant_id: tenant,
        };
        outbox::append(
            &mut uow,
            subject,
            &ProductCreated {
                product: Some(product.clone()),
            },
        )
        .await?;
        // Recorded in backlog-item before the product is acknowledged: items can be
        // planned for it as soon as the caller knows its id. If backlog-item is down, the
        // product is not created (UNAVAILABLE) rather than half-created.
        self.peers
            .record_products(tenant, std::slice::from_ref(&product))
            .await?;
        uow.commit().await?;
        Ok(product)
    }

    async fn update_product_in(
        &self,
        tenant: &str,
        request: UpdateProductRequest,
    ) -> AppResult<Product> {
        let input = request
            .product
            .ok_or_else(|| AppError::invalid("product", "required"))?;
        let id = validate::uuid("product.id", &input.id)?.to_string();
        let paths = request.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            return Err(AppError::invalid(
                "update_mask",
                "name the fields to update",
            ));
        }
        let expected = validate::expected_version("expected_version", request.expected_version)?;
        let mut changes = input.clone();
        for path in &paths {
            match path.as_str() {
                "name" => changes.name = validate::name("product.name", &input.name)?,
                "description" => {
                    changes.description =
                        validate::description("product.description", &input.description)?
                }
                "product_owner_id" => {
                    changes.product_owner_id =
                        validate::member_id("product.product_owner_id", &input.product_owner_id)?
                            .unwrap_or_default();
                }
                "status_transition_mode" => {
                    changes.status_transition_mode = mode(
                        "product.status_transition_mode",
                        input.status_transition_mode,
                    )? as i32;
                }
                other => {
                    return Err(AppError::invalid(
                        "update_mask",
                        format!(
                            "{} cannot be updated",
                            agilepm_platform::error::shown(other)
                        ),
                    ));
                }
            }
        }
        let what = format!("product {id}");
        retry_lost_races(&what, expected, || async {
            let mut uow = self.db.begin().await?;
            let before = get(uow.conn(), tenant, &id).await?.ok_or_else(|| AppError::not_found(&what))?;
            check_version(&what, expected, before.version)?;
            let mut after = before.clone();
            for path in &paths {
                match path.as_str() {
                    "name" => after.name = changes.name.clone(),
                    "description" => after.description = changes.description.clone(),
                    "product_owner_id" => after.product_owner_id = changes.product_owner_id.clone(),
                    _ => after.status_transition_mode = changes.status_transition_mode,
                }
            }
            if after == before {
                return Ok(Attempt::Done(before));
            }
            let now = now_micros();
            after.version += 1;
            after.update_time = Some(timestamp(now));
            let updated = sqlx::query(
                "UPDATE products SET name = $1, description = $2, product_owner_id = $3, status_transition_mode = $4, \
                 version = $5, update_time_us = $6 WHERE id = $7 AND version = $8",
            )
            .bind(&after.name)
            .bind(&after.description)
            .bind(&after.product_owner_id)
            .bind(i64::from(after.status_transition_mode))
            .bind(after.version)
            .bind(now)
            .bind(&id)
            .bind(before.version)
            .execute(uow.conn())
            .await?;
            if updated.rows_affected() == 0 {
                return Ok(Attempt::LostRace);
            }
            let subject = Subject { aggregate_type: "Product", aggregate_id: &id, tenant_id: tenant };
            if (&after.name, &after.description, &after.product_owner_id) != (&before.name, &before.description, &before.product_owner_id) {
                outbox::append(&mut uow, subject, &ProductUpdated { product: Some(after.clone()) }).await?;
            }
            if after.status_transition_mode != before.status_transition_mode {
                let event = ProductTransitionModeChanged {
                    product_id: id.clone(),
                    tenant_id: tenant.to_owned(),
                    status_transition_mode: after.status_transition_mode,
                };
                outbox::append(&mut uow, subject, &event).await?;
                // The switch is recorded where reconciliation reads it before it is
                // acknowledged: every estimate after this call returns honours it.
                self.peers.record_products(tenant, std::slice::from_ref(&after)).await?;
            }
            uow.commit().await?;
            Ok(Attempt::Done(after))
        })
        .await
    }
}

#[tonic::async_trait]
impl ProductService for PlanningApi {
    async fn create_product(
        &self,
        request: Request<CreateProductRequest>,
    ) -> Result<Response<CreateProductResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let product = self
            .create_product_in(&tenant, request.into_inner())
            .await?;
        Ok(Response::new(CreateProductResponse {
            product: Some(product),
        }))
    }

    async fn get_product(
        &self,
        request: Request<GetProductRequest>,
    ) -> Result<Response<GetProductResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let id = validate::uuid("id", &request.get_ref().id)?.to_string();
        let mut conn = self.db.pool().acquire().await.map_err(AppError::from)?;
        let product = get(&mut conn, &tenant, &id)
            .await?
            .ok_or_else(|| AppError::not_found(format!("product {id}")))?;
        Ok(Response::new(GetProductResponse {
            product: Some(product),
        }))
    }

    async fn list_products(
        &self,
        request: Request<ListProductsRequest>,
    ) -> Result<Response<ListProductsResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let size = validate::page_size("page_size", r.page_size, 100, 1000)?;
        let (after_name, after_id) =
            paging::decode_pair("page_token", &r.page_token)?.unwrap_or_default();
        let rows = sqlx::query(select_products!(
            "WHERE tenant_id = $1 AND (name > $2 OR (name = $2 AND id > $3)) ORDER BY name, id LIMIT $4"
        ))
        .bind(&tenant)
        .bind(&after_name)
        .bind(&after_id)
        .bind(i64::from(size) + 1)
        .fetch_all(self.db.pool())
        .await
        .map_err(AppError::from)?;
        let products = rows
            .iter()
            .map(product_from)
            .collect::<Result<Vec<_>, _>>()
            .map_err(AppError::from)?;
        let (products, next_page_token) =
            paging::finish_page(products, size, |p| format!("{}|{}", p.name, p.id));
        Ok(Response::new(ListProductsResponse {
            products,
            next_page_token,
        }))
    }

    async fn update_product(
        &self,
        request: Request<UpdateProductRequest>,
    ) -> Result<Response<UpdateProductResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let product = self
            .update_product_in(&tenant, request.into_inner())
            .await?;
        Ok(Response::new(UpdateProductResponse {
            product: Some(product),
        }))
    }
}
