//! The coordinator's operator interface: status, poison events, skipping one.

use std::sync::Arc;

use agilepm_platform::domain::error::AppError;
use agilepm_platform::domain::{paging, validate};
use agilepm_platform::storage::db::Db;
use agilepm_platform::wire::auth::caller;
use agilepm_proto::coordinator::v1::coordinator_service_server::CoordinatorService;
use agilepm_proto::coordinator::v1::*;
use tonic::{Request, Response, Status};

use crate::domain::UNHEALTHY_AFTER_US;
use crate::mapping::poison_message;
use crate::progress::Progress;
use crate::store;

/// The coordinator's gRPC adapter.
pub struct CoordinatorApi {
    db: Db,
    progress: Arc<Progress>,
}

impl CoordinatorApi {
    /// An adapter reporting `progress` and the poison events in `db`.
    pub fn new(db: Db, progress: Arc<Progress>) -> CoordinatorApi {
        CoordinatorApi { db, progress }
    }
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
        Ok(Response::new(
            self.progress.report(UNHEALTHY_AFTER_US, poison_events),
        ))
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
        tracing::warn!(event_id = %event_id, backlog_item_id = %poison_event.backlog_item_id, "operator skipped a poison event");
        Ok(Response::new(SkipPoisonEventResponse {
            poison_event: Some(poison_message(&poison_event)),
        }))
    }
}
