//! The planning game: commands that span aggregates, carried out through the
//! backlog-item service. Each is safe to retry: every downstream create uses a request id
//! derived from the command's own (`peers::step_request_id`), and a removal that already
//! happened counts as done.

use agilepm_platform::auth::{act_for, caller};
use agilepm_platform::error::{AppError, AppResult};
use agilepm_platform::validate;
use agilepm_proto::backlog::v1::{
    BacklogItem, BacklogItemStatus, BacklogItemType, ListBacklogItemsRequest,
    MoveBacklogItemRequest, PlanBacklogItemRequest, RemoveBacklogItemRequest, StoryPoints,
    UpdateBacklogItemRequest, move_backlog_item_request,
};
use agilepm_proto::planning::v1::planning_game_service_server::PlanningGameService;
use agilepm_proto::planning::v1::*;
use tonic::{Code, Request, Response, Status};

use crate::PlanningApi;
use crate::peers::{backlog_error, step_request_id};

/// The statuses a story may be split or grouped from.
fn reshapeable(item: &BacklogItem) -> AppResult<()> {
    if item.status == BacklogItemStatus::Planned as i32
        || item.status == BacklogItemStatus::Scheduled as i32
    {
        Ok(())
    } else {
        Err(AppError::precondition(format!(
            "backlog item {} must be PLANNED or SCHEDULED to be split or grouped",
            item.id
        )))
    }
}

impl PlanningApi {
    async fn plan_story(
        &self,
        tenant: &str,
        request_id: String,
        product_id: &str,
        use_case_id: &str,
        draft: &StoryDraft,
        derived_from_ids: Vec<String>,
    ) -> AppResult<BacklogItem> {
        let request = PlanBacklogItemRequest {
            request_id,
            product_id: product_id.to_owned(),
            summary: draft.summary.clone(),
            story: draft.story.clone(),
            category: draft.category.clone(),
            r#type: draft.r#type,
            story_points: draft.story_points,
            business_priority: None,
            use_case_id: use_case_id.to_owned(),
            derived_from_ids,
        };
        let response = self
            .peers
            .backlog_items
            .clone()
            .plan_backlog_item(act_for(tenant, request))
            .await
            .map_err(backlog_error)?;
        response
            .into_inner()
            .backlog_item
            .ok_or_else(|| AppError::Internal("empty PlanBacklogItem response".into()))
    }

    /// Removes `id`; an item that is already REMOVED (a retried command) counts as done.
    async fn remove_story(&self, tenant: &str, id: &str) -> AppResult<BacklogItem> {
        let request = RemoveBacklogItemRequest {
            id: id.to_owned(),
            expected_version: None,
        };
        match self
            .peers
            .backlog_items
            .clone()
            .remove_backlog_item(act_for(tenant, request))
            .await
        {
            Ok(response) => response
                .into_inner()
                .backlog_item
                .ok_or_else(|| AppError::Internal("empty response".into())),
            Err(status) if status.code() == Code::FailedPrecondition => {
                let item = self.peers.backlog_item(tenant, id).await?;
                if item.status == BacklogItemStatus::Removed as i32 {
                    Ok(item)
                } else {
                    Err(backlog_error(status))
                }
            }
            Err(status) => Err(backlog_error(status)),
        }
    }
}

fn drafts(field: &str, stories: &[StoryDraft], min: usize) -> AppResult<()> {
    if stories.len() < min || stories.len() > 100 {
        return Err(AppError::invalid(
            field,
            format!("name {min} to 100 stories"),
        ));
    }
    for (i, story) in stories.iter().enumerate() {
        validate::name(&format!("{field}[{i}].summary"), &story.summary)?;
        validate::description(&format!("{field}[{i}].story"), &story.story)?;
    }
    Ok(())
}

#[tonic::async_trait]
impl PlanningGameService for PlanningApi {
    async fn break_down_use_case(
        &self,
        request: Request<BreakDownUseCaseRequest>,
    ) -> Result<Response<BreakDownUseCaseResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let request_id = validate::request_id("request_id", &r.request_id)?;
        let use_case_id = validate::uuid("use_case_id", &r.use_case_id)?.to_string();
        drafts("stories", &r.stories, 1)?;
        let use_case = {
            let mut conn = self.db.pool().acquire().await.map_err(AppError::from)?;
            crate::use_cases::get(&mut conn, &tenant, &use_case_id)
                .await?
                .ok_or_else(|| AppError::not_found(format!("use case {use_case_id}")))?
        };
        if use_case.state == UseCaseState::Retired as i32 {
            return Err(
                AppError::precondition(format!("use case {use_case_id} is retired")).into(),
            );
        }
        let mut items = Vec::new();
        for (i, draft) in r.stories.iter().enumerate() {
            let step = step_request_id(&tenant, &request_id, &format!("story-{i}"));
            items.push(
                self.plan_story(
                    &tenant,
                    step,
                    &use_case.product_id,
                    &use_case_id,
                    draft,
                    Vec::new(),
                )
                .await?,
            );
        }
        Ok(Response::new(BreakDownUseCaseResponse {
            backlog_items: items,
        }))
    }

    async fn split_backlog_item(
        &self,
        request: Request<SplitBacklogItemRequest>,
    ) -> Result<Response<SplitBacklogItemResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let request_id = validate::request_id("request_id", &r.request_id)?;
        let original_id = validate::uuid("backlog_item_id", &r.backlog_item_id)?.to_string();
        drafts("stories", &r.stories, 2)?;
        let original = self.peers.backlog_item(&tenant, &original_id).await?;
        // A retry finds the original already removed by the first attempt: carry on.
        if original.status != BacklogItemStatus::Removed as i32 {
            reshapeable(&original)?;
        }
        let mut items = Vec::new();
        for (i, draft) in r.stories.iter().enumerate() {
            let step = step_request_id(&tenant, &request_id, &format!("split-{i}"));
            let item = self
                .plan_story(
                    &tenant,
                    step,
                    &original.product_id,
                    &original.use_case_id,
                    draft,
                    vec![original_id.clone()],
                )
                .await?;
            items.push(item);
        }
        let removed = self.remove_story(&tenant, &original_id).await?;
        Ok(Response::new(SplitBacklogItemResponse {
            backlog_items: items,
            removed_backlog_item: Some(removed),
        }))
    }

    async fn group_backlog_items(
        &self,
        request: Request<GroupBacklogItemsRequest>,
    ) -> Result<Response<GroupBacklogItemsResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let request_id = validate::request_id("request_id", &r.request_id)?;
        if r.backlog_item_ids.len() < 2 || r.backlog_item_ids.len() > 100 {
            return Err(AppError::invalid("backlog_item_ids", "name 2 to 100 stories").into());
        }
        let ids = r
            .backlog_item_ids
            .iter()
            .map(|id| validate::uuid("backlog_item_ids", id).map(|u| u.to_string()))
            .collect::<AppResult<Vec<_>>>()?;
        let draft = r
            .story
            .ok_or_else(|| AppError::invalid("story", "required"))?;
        drafts("story", std::slice::from_ref(&draft), 1)?;
        let mut originals = Vec::new();
        for id in &ids {
            originals.push(self.peers.backlog_item(&tenant, id).await?);
        }
        let product_id = originals[0].product_id.clone();
        if originals.iter().any(|item| item.product_id != product_id) {
            return Err(
                AppError::precondition("grouped stories must all belong to one product").into(),
            );
        }
        for item in &originals {
            if item.status != BacklogItemStatus::Removed as i32 {
                reshapeable(item)?;
            }
        }
        let step = step_request_id(&tenant, &request_id, "group");
        let use_case = originals[0].use_case_id.clone();
        let grouped = self
            .plan_story(&tenant, step, &product_id, &use_case, &draft, ids.clone())
            .await?;
        let mut removed = Vec::new();
        for id in &ids {
            removed.push(self.remove_story(&tenant, id).await?);
        }
        Ok(Response::new(GroupBacklogItemsResponse {
            backlog_item: Some(grouped),
            removed_backlog_items: removed,
        }))
    }

    async fn plan_spike(
        &self,
        request: Request<PlanSpikeRequest>,
    ) -> Result<Response<PlanSpikeResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let request_id = validate::request_id("request_id", &r.request_id)?;
        let id = validate::uuid("backlog_item_id", &r.backlog_item_id)?.to_string();
        let story = validate::description("story", &r.story)?;
        let item = self.peers.backlog_item(&tenant, &id).await?;
        let summary = if r.summary.is_empty() {
            let mut default: String = format!("Spike: {}", item.summary)
                .chars()
                .take(200)
                .collect();
            default.truncate(default.trim_end().len());
            default
        } else {
            validate::name("summary", &r.summary)?
        };
        let update = UpdateBacklogItemRequest {
            backlog_item: Some(BacklogItem {
                id: id.clone(),
                story_points: StoryPoints::Unestimable as i32,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["story_points".into()],
            }),
            expected_version: None,
        };
        let marked = self
            .peers
            .backlog_items
            .clone()
            .update_backlog_item(act_for(&tenant, update))
            .await
            .map_err(backlog_error)?;
        let draft = StoryDraft {
            summary,
            story,
            category: item.category.clone(),
            r#type: BacklogItemType::Spike as i32,
            story_points: 0,
        };
        let step = step_request_id(&tenant, &request_id, "spike");
        let spike = self
            .plan_story(
                &tenant,
                step,
                &item.product_id,
                &item.use_case_id,
                &draft,
                vec![id],
            )
            .await?;
        Ok(Response::new(PlanSpikeResponse {
            backlog_item: marked.into_inner().backlog_item,
            spike: Some(spike),
        }))
    }

    async fn prioritize_backlog(
        &self,
        request: Request<PrioritizeBacklogRequest>,
    ) -> Result<Response<PrioritizeBacklogResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        validate::request_id("request_id", &r.request_id)?;
        let product_id = validate::uuid("product_id", &r.product_id)?.to_string();
        if r.ordered_backlog_item_ids.len() + r.removed_backlog_item_ids.len() > 1000 {
            return Err(AppError::invalid(
                "ordered_backlog_item_ids",
                "at most 1000 items per call",
            )
            .into());
        }
        let ordered = r
            .ordered_backlog_item_ids
            .iter()
            .map(|id| validate::uuid("ordered_backlog_item_ids", id).map(|u| u.to_string()))
            .collect::<AppResult<Vec<_>>>()?;
        let removals = r
            .removed_backlog_item_ids
            .iter()
            .map(|id| validate::uuid("removed_backlog_item_ids", id).map(|u| u.to_string()))
            .collect::<AppResult<Vec<_>>>()?;
        for id in ordered.iter().chain(&removals) {
            self.peers
                .backlog_item_of(&tenant, id, &product_id, &format!("backlog {product_id}"))
                .await?;
        }
        let mut removed = Vec::new();
        for id in &removals {
            removed.push(self.remove_story(&tenant, id).await?);
        }
        // Place the ordered items at the top: the first before the current first item,
        // each next one after its predecessor. Re-running gives the same order.
        let top = self
            .peers
            .backlog_items
            .clone()
            .list_backlog_items(act_for(
                &tenant,
                ListBacklogItemsRequest {
                    product_id: product_id.clone(),
                    page_size: 1,
                    ..Default::default()
                },
            ))
            .await
            .map_err(backlog_error)?
            .into_inner()
            .backlog_items
            .into_iter()
            .next();
        let mut items = Vec::new();
        let mut previous: Option<String> = None;
        for id in &ordered {
            let anchor = match (&previous, &top) {
                (Some(previous), _) => {
                    Some(move_backlog_item_request::Anchor::AfterId(previous.clone()))
                }
                (None, Some(top)) if top.id != *id => {
                    Some(move_backlog_item_request::Anchor::BeforeId(top.id.clone()))
                }
                (None, _) => None,
            };
            let item = match anchor {
                Some(anchor) => {
                    let request = MoveBacklogItemRequest {
                        id: id.clone(),
                        anchor: Some(anchor),
                        expected_version: None,
                    };
                    let response = self
                        .peers
                        .backlog_items
                        .clone()
                        .move_backlog_item(act_for(&tenant, request))
                        .await
                        .map_err(backlog_error)?;
                    response
                        .into_inner()
                        .backlog_item
                        .ok_or_else(|| AppError::Internal("empty response".into()))?
                }
                None => self.peers.backlog_item(&tenant, id).await?,
            };
            previous = Some(id.clone());
            items.push(item);
        }
        Ok(Response::new(PrioritizeBacklogResponse {
            backlog_items: items,
            removed_backlog_items: removed,
        }))
    }
}
