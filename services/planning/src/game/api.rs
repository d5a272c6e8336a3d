//! The PlanningGameService adapter: parse, run a game command, answer.

use agilepm_platform::domain::error::{AppError, AppResult};
use agilepm_platform::domain::validate;
use agilepm_platform::storage::idempotency::{self, Key};
use agilepm_platform::wire::auth::{Caller, access, caller};
use agilepm_proto::planning::v1::planning_game_service_server::PlanningGameService;
use agilepm_proto::planning::v1::*;
use tonic::{Request, Response, Status};

use super::commands::Game;

/// This service's name in the access tables.
const SERVICE: &str = "agilepm.planning.v1.PlanningGameService";

/// Refuses `who` sizing stories through `method` unless the field table lets it: any of
/// `drafts` that names story points is sizing.
fn may_size(who: &Caller, method: &str, drafts: &[&StoryDraft]) -> AppResult<()> {
    if drafts.iter().any(|draft| draft.story_points != 0) {
        access::authorize_field(who, SERVICE, method, "story_points")?;
    }
    Ok(())
}
use crate::PlanningApi;

/// Checks `min` to 100 story drafts in `field`.
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

/// Checks a list of distinct item ids in `field`: an id listed twice is a contradiction
/// (group a story with itself?), refused naming both places.
fn ids(field: &str, ids: &[String]) -> AppResult<Vec<String>> {
    let mut seen = std::collections::HashMap::new();
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            let id = validate::uuid(&format!("{field}[{i}]"), id)?.to_string();
            if let Some(first) = seen.insert(id.clone(), i) {
                return Err(AppError::invalid(
                    format!("{field}[{i}]"),
                    format!("{id} is listed twice (also at [{first}])"),
                ));
            }
            Ok(id)
        })
        .collect()
}

impl PlanningApi {
    fn game<'a>(&'a self, tenant: &'a str, request_id: &'a str) -> Game<'a> {
        Game {
            db: &self.db,
            peers: &self.peers,
            tenant,
            request_id,
        }
    }
}

#[tonic::async_trait]
impl PlanningGameService for PlanningApi {
    async fn break_down_use_case(
        &self,
        request: Request<BreakDownUseCaseRequest>,
    ) -> Result<Response<BreakDownUseCaseResponse>, Status> {
        let who = caller(&request)?;
        let tenant = who.tenant()?.to_owned();
        let sized: Vec<&StoryDraft> = request.get_ref().stories.iter().collect();
        may_size(&who, "BreakDownUseCase", &sized)?;
        let r = request.into_inner();
        let request_id = validate::request_id("request_id", &r.request_id)?;
        let use_case_id = validate::uuid("use_case_id", &r.use_case_id)?.to_string();
        drafts("stories", &r.stories, 1)?;
        let key = Key::new(
            &tenant,
            &request_id,
            "agilepm.planning.v1.PlanningGameService/BreakDownUseCase",
            &r,
        );
        let response = idempotency::once(&self.db, &key, || async {
            let backlog_items = self
                .game(&tenant, &request_id)
                .break_down(&use_case_id, &r.stories)
                .await?;
            Ok(BreakDownUseCaseResponse { backlog_items })
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn split_backlog_item(
        &self,
        request: Request<SplitBacklogItemRequest>,
    ) -> Result<Response<SplitBacklogItemResponse>, Status> {
        let who = caller(&request)?;
        let tenant = who.tenant()?.to_owned();
        let sized: Vec<&StoryDraft> = request.get_ref().stories.iter().collect();
        may_size(&who, "SplitBacklogItem", &sized)?;
        let r = request.into_inner();
        let request_id = validate::request_id("request_id", &r.request_id)?;
        let original_id = validate::uuid("backlog_item_id", &r.backlog_item_id)?.to_string();
        drafts("stories", &r.stories, 2)?;
        let key = Key::new(
            &tenant,
            &request_id,
            "agilepm.planning.v1.PlanningGameService/SplitBacklogItem",
            &r,
        );
        let response = idempotency::once(&self.db, &key, || async {
            let (backlog_items, removed) = self
                .game(&tenant, &request_id)
                .split(&original_id, &r.stories)
                .await?;
            Ok(SplitBacklogItemResponse {
                backlog_items,
                removed_backlog_item: Some(removed),
            })
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn group_backlog_items(
        &self,
        request: Request<GroupBacklogItemsRequest>,
    ) -> Result<Response<GroupBacklogItemsResponse>, Status> {
        let who = caller(&request)?;
        let tenant = who.tenant()?.to_owned();
        let sized: Vec<&StoryDraft> = request.get_ref().story.iter().collect();
        may_size(&who, "GroupBacklogItems", &sized)?;
        let r = request.into_inner();
        let request_id = validate::request_id("request_id", &r.request_id)?;
        if r.backlog_item_ids.len() < 2 || r.backlog_item_ids.len() > 100 {
            return Err(AppError::invalid("backlog_item_ids", "name 2 to 100 stories").into());
        }
        let ids = ids("backlog_item_ids", &r.backlog_item_ids)?;
        let draft = r
            .story
            .as_ref()
            .ok_or_else(|| AppError::invalid("story", "required"))?;
        drafts("story", std::slice::from_ref(draft), 1)?;
        let key = Key::new(
            &tenant,
            &request_id,
            "agilepm.planning.v1.PlanningGameService/GroupBacklogItems",
            &r,
        );
        let response = idempotency::once(&self.db, &key, || async {
            let (grouped, removed) = self.game(&tenant, &request_id).group(&ids, draft).await?;
            Ok(GroupBacklogItemsResponse {
                backlog_item: Some(grouped),
                removed_backlog_items: removed,
            })
        })
        .await?;
        Ok(Response::new(response))
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
        let summary = match r.summary.is_empty() {
            true => None,
            false => Some(validate::name("summary", &r.summary)?),
        };
        let key = Key::new(
            &tenant,
            &request_id,
            "agilepm.planning.v1.PlanningGameService/PlanSpike",
            &r,
        );
        let response = idempotency::once(&self.db, &key, || async {
            let (backlog_item, spike) = self
                .game(&tenant, &request_id)
                .plan_spike(&id, summary, story)
                .await?;
            Ok(PlanSpikeResponse {
                backlog_item,
                spike: Some(spike),
            })
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn prioritize_backlog(
        &self,
        request: Request<PrioritizeBacklogRequest>,
    ) -> Result<Response<PrioritizeBacklogResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let request_id = validate::request_id("request_id", &r.request_id)?;
        let product_id = validate::uuid("product_id", &r.product_id)?.to_string();
        if r.ordered_backlog_item_ids.len() + r.removed_backlog_item_ids.len() > 1000 {
            return Err(AppError::invalid(
                "ordered_backlog_item_ids",
                "at most 1000 items per call",
            )
            .into());
        }
        let ordered = ids("ordered_backlog_item_ids", &r.ordered_backlog_item_ids)?;
        let removals = ids("removed_backlog_item_ids", &r.removed_backlog_item_ids)?;
        for (i, removal) in removals.iter().enumerate() {
            if let Some(j) = ordered.iter().position(|id| id == removal) {
                return Err(AppError::invalid(
                    format!("removed_backlog_item_ids[{i}]"),
                    format!(
                        "{removal} is also in ordered_backlog_item_ids[{j}]: an item is either \
                         reordered or removed"
                    ),
                )
                .into());
            }
        }
        let key = Key::new(
            &tenant,
            &request_id,
            "agilepm.planning.v1.PlanningGameService/PrioritizeBacklog",
            &r,
        );
        let response = idempotency::once(&self.db, &key, || async {
            let (backlog_items, removed_backlog_items) = self
                .game(&tenant, &request_id)
                .prioritize(&product_id, &ordered, &removals)
                .await?;
            Ok(PrioritizeBacklogResponse {
                backlog_items,
                removed_backlog_items,
            })
        })
        .await?;
        Ok(Response::new(response))
    }
}
