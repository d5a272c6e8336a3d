//! The ProductService adapter: parse, run a command or read the store, map.

use agilepm_platform::domain::error::{AppError, AppResult, shown};
use agilepm_platform::domain::{paging, validate};
use agilepm_platform::storage::idempotency::{self, Key};
use agilepm_platform::wire::auth::caller;
use agilepm_proto::planning::v1::product_service_server::ProductService;
use agilepm_proto::planning::v1::*;
use tonic::{Request, Response, Status};

use super::commands::{self, NewProduct};
use super::domain::Change;
use super::mapping::{self, product_message};
use super::store;
use crate::PlanningApi;

/// Checks a create request.
fn parse_create(request: CreateProductRequest) -> AppResult<NewProduct> {
    let request_id = validate::request_id("request_id", &request.request_id)?;
    let input = request
        .product
        .ok_or_else(|| AppError::invalid("product", "required"))?;
    Ok(NewProduct {
        request_id,
        name: validate::name("product.name", &input.name)?,
        description: validate::description("product.description", &input.description)?,
        product_owner_id: validate::member_id("product.product_owner_id", &input.product_owner_id)?
            .unwrap_or_default(),
        transition_mode: mapping::transition_mode(
            "product.status_transition_mode",
            input.status_transition_mode,
        )?,
    })
}

/// Checks an update mask's paths against the fields of `input`.
fn parse_changes(input: &Product, paths: &[String]) -> AppResult<Vec<Change>> {
    paths
        .iter()
        .map(|path| {
            Ok(match path.as_str() {
                "name" => Change::Name(validate::name("product.name", &input.name)?),
                "description" => Change::Description(validate::description(
                    "product.description",
                    &input.description,
                )?),
                "product_owner_id" => Change::ProductOwner(
                    validate::member_id("product.product_owner_id", &input.product_owner_id)?
                        .unwrap_or_default(),
                ),
                "status_transition_mode" => Change::TransitionMode(mapping::transition_mode(
                    "product.status_transition_mode",
                    input.status_transition_mode,
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

#[tonic::async_trait]
impl ProductService for PlanningApi {
    async fn create_product(
        &self,
        request: Request<CreateProductRequest>,
    ) -> Result<Response<CreateProductResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let key = Key::new(
            &tenant,
            &r.request_id,
            "agilepm.planning.v1.ProductService/CreateProduct",
            &r,
        );
        let new = parse_create(r)?;
        let response = idempotency::once(&self.db, &key, || async {
            let product = commands::create(&self.db, &self.peers, &tenant, new).await?;
            Ok(CreateProductResponse {
                product: Some(product_message(&product)),
            })
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn get_product(
        &self,
        request: Request<GetProductRequest>,
    ) -> Result<Response<GetProductResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let id = validate::uuid("id", &request.get_ref().id)?.to_string();
        let mut conn = self.db.pool().acquire().await.map_err(AppError::from)?;
        let product = store::get(&mut conn, &tenant, &id)
            .await?
            .ok_or_else(|| AppError::not_found(format!("product {id}")))?;
        Ok(Response::new(GetProductResponse {
            product: Some(product_message(&product)),
        }))
    }

    async fn list_products(
        &self,
        request: Request<ListProductsRequest>,
    ) -> Result<Response<ListProductsResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let size = validate::page_size("page_size", r.page_size, 100, 1000)?;
        let query = paging::PageQuery::new(
            "agilepm.planning.v1.ProductService/ListProducts",
            &[&tenant],
        );
        let after = paging::decode_pair("page_token", &r.page_token, &query)?.unwrap_or_default();
        let products = store::list(&self.db, &tenant, &after, size + 1).await?;
        let (products, next_page_token) =
            paging::finish_page(products, size, &query, |p| format!("{}|{}", p.name, p.id));
        Ok(Response::new(ListProductsResponse {
            products: products.iter().map(product_message).collect(),
            next_page_token,
        }))
    }

    async fn update_product(
        &self,
        request: Request<UpdateProductRequest>,
    ) -> Result<Response<UpdateProductResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let input = r
            .product
            .ok_or_else(|| AppError::invalid("product", "required"))?;
        let id = validate::uuid("product.id", &input.id)?.to_string();
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            return Err(AppError::invalid("update_mask", "name the fields to update").into());
        }
        let expected = validate::expected_version("expected_version", r.expected_version)?;
        let changes = parse_changes(&input, &paths)?;
        let product =
            commands::update(&self.db, &self.peers, &tenant, &id, expected, &changes).await?;
        Ok(Response::new(UpdateProductResponse {
            product: Some(product_message(&product)),
        }))
    }
}
