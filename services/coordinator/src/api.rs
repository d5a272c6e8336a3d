//! The coordinator's operator interface: status, parked items and their poison events,
//! retrying or skipping one.

use std::sync::Arc;

use agilepm_platform::domain::error::AppError;
use agilepm_platform::domain::{paging, validate};
use agilepm_platform::storage::db::Db;
use agilepm_platform::wire::auth::caller;
use agilepm_proto::coordinator::v1::coordinator_service_server::CoordinatorService;
use agilepm_proto::coordinator::v1::*;
use tonic::{Request, Response, Status};

use crate::commands::Reconciler;
use crate::domain::UNHEALTHY_AFTER_US;
use crate::mapping::{parked_message, poison_message};
use crate::progress::Progress;
use crate::store;

/// The coordinator's gRPC adapter.
pub struct CoordinatorApi {
    db: Db,
    progress: Arc<Progress>,
    reconciler: Reconciler,
}

impl CoordinatorApi {
    /// An adapter reporting `progress` and the parked items in `db`, retrying them with
    /// `reconciler`.
    pub fn new(db: Db, progress: Arc<Progress>, reconciler: Reconciler) -> CoordinatorApi {
        CoordinatorApi {
            db,
            progress,
            reconciler,
        }
    }
}

/// A parked item named by a request: its tenant and its id, checked.
fn parked_item(tenant_id: &str, backlog_item_id: &str) -> Result<(String, String), AppError> {
    let tenant = agilepm_platform::wire::auth::identity::parse_tenant(tenant_id).map_err(|_| {
        AppError::invalid(
            "tenant_id",
            "tenant ids are 1-64 characters of letters, digits, '-' and '_'",
        )
    })?;
    let item = validate::uuid("backlog_item_id", backlog_item_id)?.to_string();
    Ok((tenant, item))
}

/// The role table lets operators in; what the coordinator reports spans tenants, so an
/// operator of one tenant is refused too: only a system operator (no tenant) sees it.
fn system_operator<T>(request: &Request<T>) -> Result<(), AppError> {
    if caller(request)?.is_all_tenants() {
        Ok(())
    } else {
        Err(AppError::PermissionDenied(
            "the coordinator's state spans tenants: it needs a system operator's token (role operator, no tenant)".into(),
        ))
    }
}

#[tonic::async_trait]
impl CoordinatorService for CoordinatorApi {
    async fn get_coordinator_status(
        &self,
        request: Request<GetCoordinatorStatusRequest>,
    ) -> Result<Response<GetCoordinatorStatusResponse>, Status> {
        system_operator(&request)?;
        let poison_events = store::count_poison(&self.db).await?;
        let parked_items = store::count_parked(&self.db).await?;
        Ok(Response::new(self.progress.report(
            UNHEALTHY_AFTER_US,
            poison_events,
            parked_items,
        )))
    }

    async fn list_poison_events(
        &self,
        request: Request<ListPoisonEventsRequest>,
    ) -> Result<Response<ListPoisonEventsResponse>, Status> {
        system_operator(&request)?;
        let r = request.into_inner();
        let size = validate::page_size("page_size", r.page_size, 100, 1000)?;
        let query = paging::PageQuery::new(
            "agilepm.coordinator.v1.CoordinatorService/ListPoisonEvents",
            &[],
        );
        let after = paging::decode_token("page_token", &r.page_token, &query)?.unwrap_or_default();
        let poison_events = store::list_poison(&self.db, &after, size + 1).await?;
        let (poison_events, next_page_token) =
            paging::finish_page(poison_events, size, &query, |p| p.event_id.clone());
        Ok(Response::new(ListPoisonEventsResponse {
            poison_events: poison_events.iter().map(poison_message).collect(),
            next_page_token,
        }))
    }

    async fn skip_poison_event(
        &self,
        request: Request<SkipPoisonEventRequest>,
    ) -> Result<Response<SkipPoisonEventResponse>, Status> {
        system_operator(&request)?;
        let event_id = validate::uuid("event_id", &request.get_ref().event_id)?.to_string();
        let skipped = store::skip_poison(&self.db, &event_id).await?;
        let poison_event =
            skipped.ok_or_else(|| AppError::not_found(format!("poison event {event_id}")))?;
        self.reconciler.forget_parked();
        tracing::warn!(event_id = %event_id, backlog_item_id = %poison_event.backlog_item_id, "operator skipped a poison event and its parked item");
        Ok(Response::new(SkipPoisonEventResponse {
            poison_event: Some(poison_message(&poison_event)),
        }))
    }

    async fn list_parked_items(
        &self,
        request: Request<ListParkedItemsRequest>,
    ) -> Result<Response<ListParkedItemsResponse>, Status> {
        system_operator(&request)?;
        let r = request.into_inner();
        let size = validate::page_size("page_size", r.page_size, 100, 1000)?;
        let query = paging::PageQuery::new(
            "agilepm.coordinator.v1.CoordinatorService/ListParkedItems",
            &[],
        );
        let after = paging::decode_token("page_token", &r.page_token, &query)?.unwrap_or_default();
        // Tenant ids hold no '/', so "tenant/item" names a place in (tenant, item) order.
        let after = after.split_once('/').unwrap_or(("", ""));
        let parked = store::list_parked(&self.db, after, size + 1).await?;
        let (parked, next_page_token) = paging::finish_page(parked, size, &query, |p| {
            format!("{}/{}", p.tenant_id, p.backlog_item_id)
        });
        Ok(Response::new(ListParkedItemsResponse {
            parked_items: parked.iter().map(parked_message).collect(),
            next_page_token,
        }))
    }

    async fn retry_parked_item(
        &self,
        request: Request<RetryParkedItemRequest>,
    ) -> Result<Response<RetryParkedItemResponse>, Status> {
        system_operator(&request)?;
        let r = request.get_ref();
        let (tenant, item) = parked_item(&r.tenant_id, &r.backlog_item_id)?;
        let released = self.reconciler.retry_parked(&tenant, &item).await?;
        Ok(Response::new(RetryParkedItemResponse {
            released_events: released as i64,
        }))
    }

    async fn skip_parked_item(
        &self,
        request: Request<SkipParkedItemRequest>,
    ) -> Result<Response<SkipParkedItemResponse>, Status> {
        system_operator(&request)?;
        let r = request.get_ref();
        let (tenant, item) = parked_item(&r.tenant_id, &r.backlog_item_id)?;
        let skipped = self.reconciler.skip_parked(&tenant, &item).await?;
        Ok(Response::new(SkipParkedItemResponse {
            skipped_events: skipped as i64,
        }))
    }
}
