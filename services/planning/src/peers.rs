//! The planning service's view of its peers: backlog items (backlog-item service) and
//! task hours (task service), reached over gRPC on behalf of the caller's tenant.

use agilepm_platform::domain::error::{AppError, AppResult, from_peer};
use agilepm_platform::domain::time::micros;
use agilepm_platform::wire::auth::act_for;
use agilepm_platform::wire::client::PeerChannel;
use agilepm_proto::backlog::v1::backlog_item_service_client::BacklogItemServiceClient;
use agilepm_proto::backlog::v1::{
    BacklogItem, GetBacklogItemRequest, ListBacklogItemsRequest, ListSprintMembershipsRequest,
    ProductFacts, SyncProductsRequest, SyncUseCasesRequest, UseCaseFacts,
};
use agilepm_proto::task::v1::task_service_client::TaskServiceClient;
use agilepm_proto::task::v1::{MemberFacts, SyncMembersRequest, SyncTeamSettingsRequest};
use uuid::Uuid;

/// Clients of the services the planning service coordinates.
#[derive(Clone)]
pub struct Peers {
    /// The backlog-item service.
    pub backlog_items: BacklogItemServiceClient<PeerChannel>,
    /// The task service.
    pub tasks: TaskServiceClient<PeerChannel>,
}

/// Maps a peer failure for our caller: the peer's NOT_FOUND stays NOT_FOUND.
pub fn backlog_error(status: tonic::Status) -> AppError {
    from_peer("backlog-item service", status)
}

/// How long recording products in the backlog-item service, or members in the task
/// service, may take: the caller's change waits for it.
const RECORD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

impl Peers {
    /// Tells the backlog-item service the `facts` of `tenant`'s products: that they exist and how each
    /// moves finished items. Product changes call it before they commit, so an
    /// acknowledged mode switch is what every later reconciliation applies.
    pub async fn record_products(&self, tenant: &str, facts: &[ProductFacts]) -> AppResult<()> {
        let products = facts.to_vec();
        let mut request = act_for(tenant, SyncProductsRequest { products });
        request.set_timeout(RECORD_DEADLINE);
        self.backlog_items
            .clone()
            .sync_products(request)
            .await
            .map_err(backlog_error)?;
        Ok(())
    }

    /// Tells the backlog-item service the `facts` of `tenant`'s use cases, so items can
    /// name them. A new use case calls it before it commits.
    pub async fn record_use_cases(&self, tenant: &str, facts: &[UseCaseFacts]) -> AppResult<()> {
        let use_cases = facts.to_vec();
        let mut request = act_for(tenant, SyncUseCasesRequest { use_cases });
        request.set_timeout(RECORD_DEADLINE);
        self.backlog_items
            .clone()
            .sync_use_cases(request)
            .await
            .map_err(backlog_error)?;
        Ok(())
    }

    /// Tells the task service the `facts` of `tenant`'s team members: whether each may
    /// volunteer. Team changes call it before they commit, so a member acknowledged as
    /// disabled can no longer be given a task.
    pub async fn record_members(&self, tenant: &str, facts: &[MemberFacts]) -> AppResult<()> {
        let members = facts.to_vec();
        let mut request = act_for(tenant, SyncMembersRequest { members });
        request.set_timeout(RECORD_DEADLINE);
        self.tasks
            .clone()
            .sync_members(request)
            .await
            .map_err(|status| from_peer("task service", status))?;
        Ok(())
    }

    /// Tells the task service `tenant`'s team settings (its time zone), which decide the
    /// days estimates are logged for. A change calls it before it commits, so an
    /// acknowledged zone is the one every later estimate is dated in.
    pub async fn record_team_settings(
        &self,
        tenant: &str,
        facts: SyncTeamSettingsRequest,
    ) -> AppResult<()> {
        let mut request = act_for(tenant, facts);
        request.set_timeout(RECORD_DEADLINE);
        self.tasks
            .clone()
            .sync_team_settings(request)
            .await
            .map_err(|status| from_peer("task service", status))?;
        Ok(())
    }

    /// The backlog item `id` of `tenant`.
    pub async fn backlog_item(&self, tenant: &str, id: &str) -> AppResult<BacklogItem> {
        let response = self
            .backlog_items
            .clone()
            .get_backlog_item(act_for(
                tenant,
                GetBacklogItemRequest {
                    id: id.to_owned(),
                    consistency_token: String::new(),
                },
            ))
            .await
            .map_err(backlog_error)?;
        response
            .into_inner()
            .backlog_item
            .ok_or_else(|| AppError::Internal("empty GetBacklogItem response".into()))
    }

    /// The backlog item `id`, which must belong to `product_id` (the product of the
    /// release, sprint or backlog named by `holder`): FAILED_PRECONDITION otherwise.
    pub async fn backlog_item_of(
        &self,
        tenant: &str,
        id: &str,
        product_id: &str,
        holder: &str,
    ) -> AppResult<BacklogItem> {
        let item = self.backlog_item(tenant, id).await?;
        if item.product_id == product_id {
            Ok(item)
        } else {
            Err(AppError::precondition(format!(
                "backlog item {id} belongs to another product than {holder}"
            )))
        }
    }

    /// Every membership span of sprint `sprint_id` (all pages): `(item, committed at,
    /// left at)` in µs.
    pub async fn sprint_memberships(
        &self,
        tenant: &str,
        sprint_id: &str,
    ) -> AppResult<Vec<(String, i64, Option<i64>)>> {
        let mut memberships = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = ListSprintMembershipsRequest {
                sprint_id: sprint_id.to_owned(),
                page_size: 1000,
                page_token,
            };
            let page = self
                .backlog_items
                .clone()
                .list_sprint_memberships(act_for(tenant, request))
                .await
                .map_err(backlog_error)?
                .into_inner();
            memberships.extend(page.memberships.iter().map(|m| {
                (
                    m.backlog_item_id.clone(),
                    m.commit_time.as_ref().map_or(0, micros),
                    m.leave_time.as_ref().map(micros),
                )
            }));
            if page.next_page_token.is_empty() {
                return Ok(memberships);
            }
            page_token = page.next_page_token;
        }
    }

    /// Every backlog item of `product_id` matching `filter` (all pages).
    pub async fn all_backlog_items(
        &self,
        tenant: &str,
        filter: ListBacklogItemsRequest,
    ) -> AppResult<Vec<BacklogItem>> {
        let mut items = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = ListBacklogItemsRequest {
                page_size: 1000,
                page_token,
                ..filter.clone()
            };
            let page = self
                .backlog_items
                .clone()
                .list_backlog_items(act_for(tenant, request))
                .await
                .map_err(backlog_error)?
                .into_inner();
            items.extend(page.backlog_items);
            if page.next_page_token.is_empty() {
                return Ok(items);
            }
            page_token = page.next_page_token;
        }
    }
}

/// The request id of step `step` of the multi-step command `request_id`: the same on
/// every retry, so downstream creates are idempotent.
pub fn step_request_id(tenant: &str, request_id: &str, step: &str) -> String {
    let name = format!("{tenant}/{request_id}/{step}");
    Uuid::new_v5(&Uuid::NAMESPACE_OID, name.as_bytes()).to_string()
}
