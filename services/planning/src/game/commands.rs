//! The planning game's commands, each a sequence of calls to the backlog-item service
//! that is safe to retry as a whole. Split and group are one call: the backlog-item
//! service plans the new stories and removes the originals in one transaction, so the
//! move is all or nothing whatever happens to the originals meanwhile.

use agilepm_platform::domain::error::{AppError, AppResult};
use agilepm_platform::storage::db::Db;
use agilepm_platform::wire::auth::act_for;
use agilepm_proto::backlog::v1::{
    BacklogItem, BacklogItemType, ListBacklogItemsRequest, MoveBacklogItemRequest,
    PlanBacklogItemRequest, RemoveBacklogItemRequest, ReshapeBacklogItemsRequest, StoryPoints,
    UpdateBacklogItemRequest,
};
use agilepm_proto::planning::v1::StoryDraft;
use tonic::Code;

use super::domain::{self, ItemStatus};
use super::mapping;
use crate::peers::{Peers, backlog_error, step_request_id};
use crate::use_case::domain::State as UseCaseState;

/// A game command of `tenant`, idempotent on `request_id`.
pub struct Game<'a> {
    /// The planning database (use cases).
    pub db: &'a Db,
    /// The backlog-item service.
    pub peers: &'a Peers,
    /// The caller's tenant.
    pub tenant: &'a str,
    /// The command's request id; each step's is derived from it.
    pub request_id: &'a str,
}

impl Game<'_> {
    /// Breaks use case `use_case_id` (active) down into one story per draft.
    pub async fn break_down(
        &self,
        use_case_id: &str,
        stories: &[StoryDraft],
    ) -> AppResult<Vec<BacklogItem>> {
        let use_case = {
            let mut conn = self.db.pool().acquire().await?;
            crate::use_case::store::get(&mut conn, self.tenant, use_case_id)
                .await?
                .ok_or_else(|| AppError::not_found(format!("use case {use_case_id}")))?
        };
        if use_case.state == UseCaseState::Retired {
            return Err(AppError::precondition(format!(
                "use case {use_case_id} is retired"
            )));
        }
        let mut items = Vec::new();
        for (i, draft) in stories.iter().enumerate() {
            let step = format!("story-{i}");
            let item = self
                .plan_story(&step, &use_case.product_id, use_case_id, draft, Vec::new())
                .await?;
            items.push(item);
        }
        Ok(items)
    }

    /// Splits item `original_id` into one story per draft and removes it. Returns the new
    /// stories and the removed original.
    pub async fn split(
        &self,
        original_id: &str,
        stories: &[StoryDraft],
    ) -> AppResult<(Vec<BacklogItem>, BacklogItem)> {
        let original = self.peers.backlog_item(self.tenant, original_id).await?;
        domain::reshapeable(original_id, mapping::item_status(&original))?;
        let drafts: Vec<PlanBacklogItemRequest> = stories
            .iter()
            .enumerate()
            .map(|(i, draft)| {
                self.story_request(
                    &format!("split-{i}"),
                    &original.product_id,
                    &original.use_case_id,
                    draft,
                    vec![original_id.to_owned()],
                )
            })
            .collect();
        let (items, mut removed) = self.reshape(&[original_id.to_owned()], drafts).await?;
        let removed = removed
            .pop()
            .ok_or_else(|| AppError::Internal("empty ReshapeBacklogItems response".into()))?;
        Ok((items, removed))
    }

    /// Groups items `ids` of one product into one story and removes them. Returns the
    /// new story and the removed originals.
    pub async fn group(
        &self,
        ids: &[String],
        draft: &StoryDraft,
    ) -> AppResult<(BacklogItem, Vec<BacklogItem>)> {
        let mut originals = Vec::new();
        for id in ids {
            originals.push(self.peers.backlog_item(self.tenant, id).await?);
        }
        let product_id = originals[0].product_id.clone();
        if originals.iter().any(|item| item.product_id != product_id) {
            return Err(AppError::precondition(
                "grouped stories must all belong to one product",
            ));
        }
        for item in &originals {
            domain::reshapeable(&item.id, mapping::item_status(item))?;
        }
        let use_case = originals[0].use_case_id.clone();
        let story = self.story_request("group", &product_id, &use_case, draft, ids.to_vec());
        let (mut grouped, removed) = self.reshape(ids, vec![story]).await?;
        let grouped = grouped
            .pop()
            .ok_or_else(|| AppError::Internal("empty ReshapeBacklogItems response".into()))?;
        Ok((grouped, removed))
    }

    /// Marks item `id` UNESTIMABLE and plans a spike to investigate it (summarised
    /// `summary`, or after the item). Returns the item and the spike.
    pub async fn plan_spike(
        &self,
        id: &str,
        summary: Option<String>,
        story: String,
    ) -> AppResult<(Option<BacklogItem>, BacklogItem)> {
        let item = self.peers.backlog_item(self.tenant, id).await?;
        let summary = summary.unwrap_or_else(|| domain::spike_summary(&item.summary));
        let update = UpdateBacklogItemRequest {
            backlog_item: Some(BacklogItem {
                id: id.to_owned(),
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
            .update_backlog_item(act_for(self.tenant, update))
            .await
            .map_err(backlog_error)?;
        let draft = StoryDraft {
            summary,
            story,
            category: item.category.clone(),
            r#type: BacklogItemType::Spike as i32,
            story_points: 0,
        };
        let spike = self
            .plan_story(
                "spike",
                &item.product_id,
                &item.use_case_id,
                &draft,
                vec![id.to_owned()],
            )
            .await?;
        Ok((marked.into_inner().backlog_item, spike))
    }

    /// Removes `removals` from product `product_id`'s backlog and puts `ordered` at its
    /// top, in that order. Returns the ordered items and the removed ones.
    pub async fn prioritize(
        &self,
        product_id: &str,
        ordered: &[String],
        removals: &[String],
    ) -> AppResult<(Vec<BacklogItem>, Vec<BacklogItem>)> {
        for id in ordered.iter().chain(removals) {
            self.peers
                .backlog_item_of(
                    self.tenant,
                    id,
                    product_id,
                    &format!("backlog {product_id}"),
                )
                .await?;
        }
        let mut removed = Vec::new();
        for id in removals {
            removed.push(self.remove_story(id).await?);
        }
        let top = self
            .peers
            .backlog_items
            .clone()
            .list_backlog_items(act_for(
                self.tenant,
                ListBacklogItemsRequest {
                    product_id: product_id.to_owned(),
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
        let mut previous: Option<&str> = None;
        for id in ordered {
            let place = domain::place(previous, top.as_ref().map(|t| t.id.as_str()), id);
            let item = match mapping::anchor(place) {
                Some(anchor) => {
                    let request = MoveBacklogItemRequest {
                        id: id.clone(),
                        anchor: Some(anchor),
                        expected_version: None,
                    };
                    self.peers
                        .backlog_items
                        .clone()
                        .move_backlog_item(act_for(self.tenant, request))
                        .await
                        .map_err(backlog_error)?
                        .into_inner()
                        .backlog_item
                        .ok_or_else(|| AppError::Internal("empty response".into()))?
                }
                None => self.peers.backlog_item(self.tenant, id).await?,
            };
            previous = Some(id);
            items.push(item);
        }
        Ok((items, removed))
    }

    /// Plans `stories` and removes `remove_ids` as one move of the backlog-item service,
    /// all or nothing: an original committed meanwhile leaves no new story behind.
    async fn reshape(
        &self,
        remove_ids: &[String],
        stories: Vec<PlanBacklogItemRequest>,
    ) -> AppResult<(Vec<BacklogItem>, Vec<BacklogItem>)> {
        let request = ReshapeBacklogItemsRequest {
            remove_ids: remove_ids.to_vec(),
            stories,
        };
        let response = self
            .peers
            .backlog_items
            .clone()
            .reshape_backlog_items(act_for(self.tenant, request))
            .await
            .map_err(backlog_error)?
            .into_inner();
        Ok((response.stories, response.removed))
    }

    /// The request planning `draft` as step `step` of the command.
    fn story_request(
        &self,
        step: &str,
        product_id: &str,
        use_case_id: &str,
        draft: &StoryDraft,
        derived_from_ids: Vec<String>,
    ) -> PlanBacklogItemRequest {
        PlanBacklogItemRequest {
            request_id: step_request_id(self.tenant, self.request_id, step),
            product_id: product_id.to_owned(),
            summary: draft.summary.clone(),
            story: draft.story.clone(),
            category: draft.category.clone(),
            r#type: draft.r#type,
            story_points: draft.story_points,
            business_priority: None,
            use_case_id: use_case_id.to_owned(),
            derived_from_ids,
        }
    }

    /// Plans `draft` as step `step` of the command.
    async fn plan_story(
        &self,
        step: &str,
        product_id: &str,
        use_case_id: &str,
        draft: &StoryDraft,
        derived_from_ids: Vec<String>,
    ) -> AppResult<BacklogItem> {
        let request = self.story_request(step, product_id, use_case_id, draft, derived_from_ids);
        let response = self
            .peers
            .backlog_items
            .clone()
            .plan_backlog_item(act_for(self.tenant, request))
            .await
            .map_err(backlog_error)?;
        response
            .into_inner()
            .backlog_item
            .ok_or_else(|| AppError::Internal("empty PlanBacklogItem response".into()))
    }

    /// Removes `id`; an item that is already REMOVED (a retried command) counts as done.
    async fn remove_story(&self, id: &str) -> AppResult<BacklogItem> {
        let request = RemoveBacklogItemRequest {
            id: id.to_owned(),
            expected_version: None,
        };
        match self
            .peers
            .backlog_items
            .clone()
            .remove_backlog_item(act_for(self.tenant, request))
            .await
        {
            Ok(response) => response
                .into_inner()
                .backlog_item
                .ok_or_else(|| AppError::Internal("empty response".into())),
            Err(status) if status.code() == Code::FailedPrecondition => {
                let item = self.peers.backlog_item(self.tenant, id).await?;
                if mapping::item_status(&item) == ItemStatus::Removed {
                    Ok(item)
                } else {
                    Err(backlog_error(status))
                }
            }
            Err(status) => Err(backlog_error(status)),
        }
    }
}
