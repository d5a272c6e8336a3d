//! The backlog-item service's gRPC adapter: each RPC parses and checks its request, runs
//! a command (`commands`) or reads the store (`store`), and maps the result to its
//! response (`mapping`).

use std::time::Duration;

use agilepm_platform::domain::error::{AppError, AppResult};
use agilepm_platform::domain::{consistency, paging, validate};
use agilepm_platform::storage::db::Db;
use agilepm_platform::storage::idempotency::{self, Key};
use agilepm_platform::wire::auth::{access, caller};
use agilepm_platform::wire::deadline;
use agilepm_proto::backlog::v1::backlog_item_service_server::BacklogItemService;
use agilepm_proto::backlog::v1::*;
use tonic::{Request, Response, Status as GrpcStatus};

use crate::commands::{Commands, MoveTo, NewItem, RankScope, Reconcile};
use crate::domain;
use crate::domain::{StoryChange, TaskBasis};
use crate::mapping::{self, item_message};
use crate::store::{self, ListOrder, ListQuery};

type Reply<T> = Result<Response<T>, GrpcStatus>;

/// The backlog-item service's gRPC adapter.
#[derive(Clone)]
pub struct BacklogItemApi {
    db: Db,
    commands: Commands,
}

impl BacklogItemApi {
    /// An adapter over `db`. Starts the reconcile writer, so it must be called inside the
    /// tokio runtime.
    pub fn new(db: Db) -> BacklogItemApi {
        let commands = Commands::new(db.clone());
        BacklogItemApi { db, commands }
    }
}

/// Checks a plan request.
fn parse_plan(request: PlanBacklogItemRequest) -> AppResult<NewItem> {
    if request.derived_from_ids.len() > 100 {
        return Err(AppError::invalid("derived_from_ids", "at most 100"));
    }
    Ok(NewItem {
        request_id: validate::request_id("request_id", &request.request_id)?,
        product_id: validate::uuid("product_id", &request.product_id)?.to_string(),
        summary: validate::name("summary", &request.summary)?,
        story: validate::description("story", &request.story)?,
        category: validate::text("category", &request.category, 0, 100)?,
        item_type: mapping::item_type("type", request.r#type)?,
        story_points: mapping::story_points("story_points", request.story_points)?,
        business_priority: mapping::business_priority(
            "business_priority",
            request.business_priority.as_ref(),
        )?,
        use_case_id: optional_id("use_case_id", &request.use_case_id)?,
        derived_from_ids: request
            .derived_from_ids
            .iter()
            .map(|id| validate::uuid("derived_from_ids", id).map(|u| u.to_string()))
            .collect::<AppResult<Vec<_>>>()?,
    })
}

/// This service's name in the access tables.
const SERVICE: &str = "agilepm.backlog.v1.BacklogItemService";

/// An optional id in `field`: empty, or a UUID in canonical form.
fn optional_id(field: &str, value: &str) -> AppResult<String> {
    Ok(validate::optional_uuid(field, value)?
        .map(|u| u.to_string())
        .unwrap_or_default())
}

/// Checks an update mask's paths against the fields of `update`.
fn parse_story_changes(update: &BacklogItem, paths: &[String]) -> AppResult<Vec<StoryChange>> {
    paths
        .iter()
        .map(|path| {
            Ok(match path.as_str() {
                "summary" => {
                    StoryChange::Summary(validate::name("backlog_item.summary", &update.summary)?)
                }
                "story" => StoryChange::Story(validate::description(
                    "backlog_item.story",
                    &update.story,
                )?),
                "category" => StoryChange::Category(validate::text(
                    "backlog_item.category",
                    &update.category,
                    0,
                    100,
                )?),
                "type" => StoryChange::Type(mapping::item_type("backlog_item.type", update.r#type)?),
                "story_points" => StoryChange::StoryPoints(mapping::story_points(
                    "backlog_item.story_points",
                    update.story_points,
                )?),
                "business_priority" => StoryChange::BusinessPriority(mapping::business_priority(
                    "backlog_item.business_priority",
                    update.business_priority.as_ref(),
                )?),
                "use_case_id" => StoryChange::UseCase(optional_id(
                    "backlog_item.use_case_id",
                    &update.use_case_id,
                )?),
                other => {
                    return Err(AppError::invalid(
                        "update_mask",
                        format!(
                            "{other:?} cannot be updated (summary, story, category, type, story_points, business_priority, use_case_id can)"
                        ),
                    ));
                }
            })
        })
        .collect()
}

/// Checks a move request's anchor: (field, anchor id, before it) as its oneof says.
fn parse_move(
    scope: RankScope,
    id: &str,
    anchor: Option<(&'static str, &str, bool)>,
) -> AppResult<MoveTo> {
    let Some((field, anchor_id, before)) = anchor else {
        return Err(AppError::invalid("anchor", "name before_id or after_id"));
    };
    let anchor_id = validate::uuid(field, anchor_id)?.to_string();
    if anchor_id == id {
        return Err(AppError::invalid(
            field,
            "an item cannot move relative to itself",
        ));
    }
    Ok(MoveTo {
        scope,
        anchor_id,
        before,
    })
}

/// Most bases in one `ReconcileBacklogItemStatuses` call.
pub const MAX_RECONCILES_PER_CALL: usize = 1000;

/// Checks a reconcile request and turns it into a basis for the group commit.
fn parse_reconcile(
    tenant: &str,
    request: ReconcileBacklogItemStatusRequest,
) -> AppResult<Reconcile> {
    let id = validate::uuid("id", &request.id)?.to_string();
    if request.task_hours_remaining < 0 {
        return Err(AppError::invalid(
            "task_hours_remaining",
            "must not be negative",
        ));
    }
    if request.task_count < 0 {
        return Err(AppError::invalid("task_count", "must not be negative"));
    }
    if request.task_revision < 1 {
        return Err(AppError::invalid("task_revision", "must be at least 1"));
    }
    // `transition_mode` is ignored: the mode applied is the one recorded for the item's
    // product (SyncProducts), so no caller can choose it.
    Ok(Reconcile {
        tenant: tenant.to_owned(),
        id,
        basis: TaskBasis {
            hours: request.task_hours_remaining,
            count: request.task_count,
            revision: request.task_revision,
        },
        // Applied by the group-commit writer, in another task: the actor goes along.
        actor: agilepm_platform::wire::auth::acting_subject().unwrap_or_default(),
        trace_parent: agilepm_platform::storage::trace_parent::current(),
    })
}

/// Checks every basis of a batch call, naming the first malformed one by its place.
fn parse_reconciles(
    tenant: &str,
    requests: Vec<ReconcileBacklogItemStatusRequest>,
) -> AppResult<Vec<Reconcile>> {
    if requests.is_empty() || requests.len() > MAX_RECONCILES_PER_CALL {
        return Err(AppError::invalid(
            "reconciles",
            format!(
                "must hold 1 to {MAX_RECONCILES_PER_CALL} bases, not {}",
                requests.len()
            ),
        ));
    }
    requests
        .into_iter()
        .enumerate()
        .map(|(i, request)| {
            parse_reconcile(tenant, request).map_err(|error| match error {
                AppError::InvalidArgument { field, reason } => {
                    AppError::invalid(format!("reconciles[{i}].{field}"), reason)
                }
                other => other,
            })
        })
        .collect()
}

/// Most items one reshape removes, and most stories it plans.
const MAX_RESHAPED: usize = 100;

/// Checks a reshape request: the ids it removes and the stories it plans.
fn parse_reshape(request: ReshapeBacklogItemsRequest) -> AppResult<(Vec<String>, Vec<NewItem>)> {
    for (field, count) in [
        ("remove_ids", request.remove_ids.len()),
        ("stories", request.stories.len()),
    ] {
        if count == 0 || count > MAX_RESHAPED {
            return Err(AppError::invalid(
                field,
                format!("must hold 1 to {MAX_RESHAPED}, not {count}"),
            ));
        }
    }
    let remove_ids = request
        .remove_ids
        .iter()
        .enumerate()
        .map(|(i, id)| validate::uuid(&format!("remove_ids[{i}]"), id).map(|u| u.to_string()))
        .collect::<AppResult<Vec<_>>>()?;
    let stories = request
        .stories
        .into_iter()
        .enumerate()
        .map(|(i, story)| {
            parse_plan(story).map_err(|error| match error {
                AppError::InvalidArgument { field, reason } => {
                    AppError::invalid(format!("stories[{i}].{field}"), reason)
                }
                other => other,
            })
        })
        .collect::<AppResult<Vec<_>>>()?;
    Ok((remove_ids, stories))
}

/// What a ListBacklogItems page token is bound to: every field that decides the rows
/// and their order, in canonical form.
fn list_page_query(query: &ListQuery) -> paging::PageQuery {
    let mut statuses: Vec<String> = query.statuses.iter().map(|s| s.name().to_owned()).collect();
    statuses.sort_unstable();
    statuses.dedup();
    let statuses = statuses.join(",");
    let item_type = query
        .item_type
        .map(|t| t.number().to_string())
        .unwrap_or_default();
    let order = query.order.as_str();
    paging::PageQuery::new(
        "agilepm.backlog.v1.BacklogItemService/ListBacklogItems",
        &[
            &query.tenant,
            &query.product_id,
            &statuses,
            &query.release_id,
            &query.sprint_id,
            &query.use_case_id,
            &item_type,
            order,
        ],
    )
}

/// Most facts one SyncProducts or SyncUseCases call may carry.
const MAX_SYNC_FACTS: usize = 1000;

/// The longest a read with a consistency token waits when the caller set no deadline.
const FRESH_READ_WAIT: Duration = Duration::from_secs(5);
/// How much of the caller's deadline a fresh read keeps to answer DEADLINE_EXCEEDED
/// itself, naming the revisions, before tonic's generic one: room for the answer to be
/// encoded and sent on a busy machine.
const FRESH_READ_MARGIN: Duration = Duration::from_millis(50);

impl BacklogItemApi {
    /// Waits until item `token.backlog_item_id` of `tenant` has applied task revision
    /// `token.revision`, within `timeout` (the caller's deadline). Commits of this
    /// process wake it; a reconcile that only records a revision writes no event and
    /// wakes nobody, and another replica's commits are not seen, so it also re-reads on
    /// a timer backing off from 5 to 100 ms.
    async fn await_revision(
        &self,
        tenant: &str,
        token: &consistency::Token,
        timeout: Option<Duration>,
    ) -> AppResult<()> {
        let wait = match timeout {
            Some(timeout) => timeout.saturating_sub(FRESH_READ_MARGIN),
            None => FRESH_READ_WAIT,
        };
        let deadline = tokio::time::Instant::now() + wait;
        let mut commits = self.db.notifier().subscribe();
        let mut pause = Duration::from_millis(5);
        let mut applied = None;
        loop {
            // Each read is bounded by the deadline too, and none starts after it: a slow
            // database makes the answer DEADLINE_EXCEEDED on time, not a late one.
            let read = async {
                let mut conn = self.db.pool().acquire().await?;
                Ok::<_, AppError>(
                    store::get(&mut conn, tenant, &token.backlog_item_id)
                        .await?
                        .ok_or_else(|| {
                            AppError::not_found(format!("backlog item {}", token.backlog_item_id))
                        })?
                        .tasks
                        .revision,
                )
            };
            if let Ok(revision) = tokio::time::timeout_at(deadline, read).await {
                let revision = revision?;
                if revision >= token.revision {
                    return Ok(());
                }
                applied = Some(revision);
            }
            if tokio::time::Instant::now() >= deadline {
                let applied = applied.map_or("no".to_owned(), |r| r.to_string());
                return Err(AppError::DeadlineExceeded(format!(
                    "backlog item {} has applied task revision {applied}, not yet {} that the \
                     consistency token names; retry, or read without the token to see it as it is",
                    token.backlog_item_id, token.revision
                )));
            }
            let next = (tokio::time::Instant::now() + pause).min(deadline);
            tokio::select! {
                _ = commits.changed() => {}
                () = tokio::time::sleep_until(next) => {}
            }
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }
}

#[tonic::async_trait]
impl BacklogItemService for BacklogItemApi {
    async fn list_sprint_memberships(
        &self,
        request: Request<ListSprintMembershipsRequest>,
    ) -> Reply<ListSprintMembershipsResponse> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let sprint_id = validate::uuid("sprint_id", &r.sprint_id)?.to_string();
        let size = validate::page_size("page_size", r.page_size, 1000, 1000)?;
        let query = paging::PageQuery::new(
            "agilepm.backlog.v1.BacklogItemService/ListSprintMemberships",
            &[&tenant, &sprint_id],
        );
        let after = paging::decode_numbered("page_token", &r.page_token, &query)?;
        let memberships =
            store::sprint_memberships(&self.db, &tenant, &sprint_id, after, size + 1).await?;
        let (memberships, next_page_token) = paging::finish_page(memberships, size, &query, |m| {
            format!("{}|{}", m.commit_time_us, m.backlog_item_id)
        });
        Ok(Response::new(ListSprintMembershipsResponse {
            memberships: memberships
                .iter()
                .map(mapping::membership_message)
                .collect(),
            next_page_token,
        }))
    }

    async fn reshape_backlog_items(
        &self,
        request: Request<ReshapeBacklogItemsRequest>,
    ) -> Reply<ReshapeBacklogItemsResponse> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let (remove_ids, stories) = parse_reshape(request.into_inner())?;
        let (made, removed) = self
            .commands
            .reshape(&tenant, &remove_ids, &stories)
            .await?;
        Ok(Response::new(ReshapeBacklogItemsResponse {
            stories: made.iter().map(item_message).collect(),
            removed: removed.iter().map(item_message).collect(),
        }))
    }

    async fn sync_use_cases(
        &self,
        request: Request<SyncUseCasesRequest>,
    ) -> Reply<SyncUseCasesResponse> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let use_cases = request.into_inner().use_cases;
        if use_cases.is_empty() || use_cases.len() > MAX_SYNC_FACTS {
            return Err(AppError::invalid(
                "use_cases",
                format!(
                    "must hold 1 to {MAX_SYNC_FACTS} facts, not {}",
                    use_cases.len()
                ),
            )
            .into());
        }
        let facts = use_cases
            .iter()
            .enumerate()
            .map(|(i, fact)| {
                let id = validate::uuid(&format!("use_cases[{i}].use_case_id"), &fact.use_case_id)?;
                let product =
                    validate::uuid(&format!("use_cases[{i}].product_id"), &fact.product_id)?;
                if fact.use_case_version < 1 {
                    return Err(AppError::invalid(
                        format!("use_cases[{i}].use_case_version"),
                        "must be at least 1",
                    ));
                }
                Ok((id.to_string(), product.to_string(), fact.use_case_version))
            })
            .collect::<AppResult<Vec<_>>>()?;
        let applied = store::record_use_cases(&self.db, &tenant, &facts).await?;
        Ok(Response::new(SyncUseCasesResponse {
            applied: applied as i32,
        }))
    }

    async fn sync_products(
        &self,
        request: Request<SyncProductsRequest>,
    ) -> Reply<SyncProductsResponse> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let products = request.into_inner().products;
        if products.is_empty() || products.len() > MAX_SYNC_FACTS {
            return Err(AppError::invalid(
                "products",
                format!(
                    "must hold 1 to {MAX_SYNC_FACTS} facts, not {}",
                    products.len()
                ),
            )
            .into());
        }
        let facts = products
            .iter()
            .enumerate()
            .map(|(i, fact)| {
                let id = validate::uuid(&format!("products[{i}].product_id"), &fact.product_id)?;
                let mode = mapping::transition_mode(
                    &format!("products[{i}].status_transition_mode"),
                    fact.status_transition_mode,
                )?;
                if fact.product_version < 1 {
                    return Err(AppError::invalid(
                        format!("products[{i}].product_version"),
                        "must be at least 1",
                    ));
                }
                Ok((id.to_string(), mode, fact.product_version))
            })
            .collect::<AppResult<Vec<_>>>()?;
        let applied = self.commands.sync_products(&tenant, &facts).await?;
        Ok(Response::new(SyncProductsResponse {
            applied: applied as i32,
        }))
    }

    async fn plan_backlog_item(
        &self,
        request: Request<PlanBacklogItemRequest>,
    ) -> Reply<PlanBacklogItemResponse> {
        let who = caller(&request)?;
        let tenant = who.tenant()?.to_owned();
        // Who may set which field, before anything else: the refusal names the field.
        let method = "PlanBacklogItem";
        if request.get_ref().story_points != 0 {
            access::authorize_field(&who, SERVICE, method, "story_points")?;
        }
        if request.get_ref().business_priority.is_some() {
            access::authorize_field(&who, SERVICE, method, "business_priority")?;
        }
        let r = request.into_inner();
        let key = Key::new(
            &tenant,
            &r.request_id,
            "agilepm.backlog.v1.BacklogItemService/PlanBacklogItem",
            &r,
        );
        let new = parse_plan(r)?;
        let response = idempotency::once(&self.db, &key, || async {
            let item = self.commands.plan(&tenant, new).await?;
            Ok(PlanBacklogItemResponse {
                backlog_item: Some(item_message(&item)),
            })
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn get_backlog_item(
        &self,
        request: Request<GetBacklogItemRequest>,
    ) -> Reply<GetBacklogItemResponse> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let id = validate::uuid("id", &request.get_ref().id)?.to_string();
        let token = consistency::decode("consistency_token", &request.get_ref().consistency_token)?;
        if let Some(token) = &token {
            if token.backlog_item_id != id {
                return Err(AppError::invalid(
                    "consistency_token",
                    format!("names backlog item {}, not {id}", token.backlog_item_id),
                )
                .into());
            }
            let timeout = deadline::caller_timeout(request.metadata());
            self.await_revision(&tenant, token, timeout).await?;
        }
        let mut conn = self.db.pool().acquire().await.map_err(AppError::from)?;
        let item = store::get(&mut conn, &tenant, &id)
            .await?
            .ok_or_else(|| AppError::not_found(format!("backlog item {id}")))?;
        Ok(Response::new(GetBacklogItemResponse {
            backlog_item: Some(item_message(&item)),
        }))
    }

    async fn list_backlog_items(
        &self,
        request: Request<ListBacklogItemsRequest>,
    ) -> Reply<ListBacklogItemsResponse> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let timeout = deadline::caller_timeout(request.metadata());
        let r = request.into_inner();
        let token = consistency::decode("consistency_token", &r.consistency_token)?;
        let order = match r.order_by.trim() {
            "" | "rank" => ListOrder::Rank,
            "priority_score desc" => ListOrder::PriorityScore,
            "sprint_rank" if r.sprint_id.is_empty() => {
                return Err(AppError::invalid(
                    "order_by",
                    "\"sprint_rank\" orders one sprint: name it in sprint_id",
                )
                .into());
            }
            "sprint_rank" => ListOrder::SprintRank,
            other => {
                return Err(AppError::invalid(
                    "order_by",
                    format!(
                        "{}: use \"rank\", \"priority_score desc\" or \"sprint_rank\"",
                        agilepm_platform::domain::error::shown(other)
                    ),
                )
                .into());
            }
        };
        let statuses = r
            .statuses
            .iter()
            .map(|s| mapping::status("statuses", *s))
            .collect::<AppResult<Vec<_>>>()?;
        let item_type = match r.r#type {
            0 => None,
            value => Some(mapping::item_type("type", value)?),
        };
        let mut query = ListQuery {
            tenant,
            product_id: validate::uuid("product_id", &r.product_id)?.to_string(),
            statuses,
            release_id: optional_id("release_id", &r.release_id)?,
            sprint_id: optional_id("sprint_id", &r.sprint_id)?,
            use_case_id: optional_id("use_case_id", &r.use_case_id)?,
            item_type,
            order,
            after: None,
            limit: validate::page_size("page_size", r.page_size, 100, 1000)? + 1,
        };
        let page_query = list_page_query(&query);
        query.after = paging::decode_numbered("page_token", &r.page_token, &page_query)?;
        if let Some(token) = &token {
            self.await_revision(&query.tenant, token, timeout).await?;
        }
        let mut items = store::list(&self.db, &query).await?;
        let next_page_token = if items.len() == query.limit as usize {
            items.pop();
            items
                .last()
                .map(|last| {
                    let key = match query.order {
                        ListOrder::SprintRank => format!("0|{}", last.sprint_rank),
                        _ => format!("{}|{}", last.priority_score(), last.rank),
                    };
                    paging::encode_token(&page_query, &key)
                })
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListBacklogItemsResponse {
            backlog_items: items.iter().map(item_message).collect(),
            next_page_token,
        }))
    }

    async fn update_backlog_item(
        &self,
        request: Request<UpdateBacklogItemRequest>,
    ) -> Reply<UpdateBacklogItemResponse> {
        let who = caller(&request)?;
        let tenant = who.tenant()?.to_owned();
        if let Some(mask) = &request.get_ref().update_mask {
            for path in &mask.paths {
                access::authorize_field(&who, SERVICE, "UpdateBacklogItem", path)?;
            }
        }
        let r = request.into_inner();
        let update = r
            .backlog_item
            .ok_or_else(|| AppError::invalid("backlog_item", "required"))?;
        let id = validate::uuid("backlog_item.id", &update.id)?.to_string();
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            return Err(AppError::invalid("update_mask", "name the fields to update").into());
        }
        let expected = validate::expected_version("expected_version", r.expected_version)?;
        let changes = parse_story_changes(&update, &paths)?;
        let item = self
            .commands
            .change_story(&tenant, &id, expected, &changes)
            .await?;
        Ok(Response::new(UpdateBacklogItemResponse {
            backlog_item: Some(item_message(&item)),
        }))
    }

    async fn schedule_backlog_item(
        &self,
        request: Request<ScheduleBacklogItemRequest>,
    ) -> Reply<ScheduleBacklogItemResponse> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let id = validate::uuid("id", &r.id)?.to_string();
        let release = validate::uuid("release_id", &r.release_id)?.to_string();
        let expected = validate::expected_version("expected_version", r.expected_version)?;
        let item = self
            .commands
            .transition(&tenant, &id, expected, |p| domain::schedule(p, &release))
            .await?;
        Ok(Response::new(ScheduleBacklogItemResponse {
            backlog_item: Some(item_message(&item)),
        }))
    }

    async fn unschedule_backlog_item(
        &self,
        request: Request<UnscheduleBacklogItemRequest>,
    ) -> Reply<UnscheduleBacklogItemResponse> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let id = validate::uuid("id", &r.id)?.to_string();
        let expected = validate::expected_version("expected_version", r.expected_version)?;
        let item = self
            .commands
            .transition(&tenant, &id, expected, domain::unschedule)
            .await?;
        Ok(Response::new(UnscheduleBacklogItemResponse {
            backlog_item: Some(item_message(&item)),
        }))
    }

    async fn commit_backlog_item(
        &self,
        request: Request<CommitBacklogItemRequest>,
    ) -> Reply<CommitBacklogItemResponse> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let id = validate::uuid("id", &r.id)?.to_string();
        let sprint = validate::uuid("sprint_id", &r.sprint_id)?.to_string();
        let expected = validate::expected_version("expected_version", r.expected_version)?;
        let item = self
            .commands
            .transition(&tenant, &id, expected, |p| domain::commit(p, &sprint))
            .await?;
        Ok(Response::new(CommitBacklogItemResponse {
            backlog_item: Some(item_message(&item)),
        }))
    }

    async fn uncommit_backlog_item(
        &self,
        request: Request<UncommitBacklogItemRequest>,
    ) -> Reply<UncommitBacklogItemResponse> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let id = validate::uuid("id", &r.id)?.to_string();
        let expected = validate::expected_version("expected_version", r.expected_version)?;
        let item = self
            .commands
            .transition(&tenant, &id, expected, domain::uncommit)
            .await?;
        Ok(Response::new(UncommitBacklogItemResponse {
            backlog_item: Some(item_message(&item)),
        }))
    }

    async fn remove_backlog_item(
        &self,
        request: Request<RemoveBacklogItemRequest>,
    ) -> Reply<RemoveBacklogItemResponse> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let id = validate::uuid("id", &r.id)?.to_string();
        let expected = validate::expected_version("expected_version", r.expected_version)?;
        let item = self
            .commands
            .transition(&tenant, &id, expected, domain::remove)
            .await?;
        Ok(Response::new(RemoveBacklogItemResponse {
            backlog_item: Some(item_message(&item)),
        }))
    }

    async fn mark_backlog_item_done(
        &self,
        request: Request<MarkBacklogItemDoneRequest>,
    ) -> Reply<MarkBacklogItemDoneResponse> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let id = validate::uuid("id", &r.id)?.to_string();
        let expected = validate::expected_version("expected_version", r.expected_version)?;
        let item = self
            .commands
            .change(&tenant, &id, expected, |item| {
                Ok(domain::BacklogItem {
                    placement: domain::mark_done(&item.placement, item.tasks)?,
                    ..item.clone()
                })
            })
            .await?;
        Ok(Response::new(MarkBacklogItemDoneResponse {
            backlog_item: Some(item_message(&item)),
        }))
    }

    async fn move_backlog_item(
        &self,
        request: Request<MoveBacklogItemRequest>,
    ) -> Reply<MoveBacklogItemResponse> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let id = validate::uuid("id", &r.id)?.to_string();
        let expected = validate::expected_version("expected_version", r.expected_version)?;
        let anchor = r.anchor.as_ref().map(|anchor| match anchor {
            move_backlog_item_request::Anchor::BeforeId(a) => ("before_id", a.as_str(), true),
            move_backlog_item_request::Anchor::AfterId(a) => ("after_id", a.as_str(), false),
        });
        let to = parse_move(RankScope::Product, &id, anchor)?;
        let item = self.commands.move_item(&tenant, &id, expected, &to).await?;
        Ok(Response::new(MoveBacklogItemResponse {
            backlog_item: Some(item_message(&item)),
        }))
    }

    async fn move_backlog_item_in_sprint(
        &self,
        request: Request<MoveBacklogItemInSprintRequest>,
    ) -> Reply<MoveBacklogItemInSprintResponse> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let id = validate::uuid("id", &r.id)?.to_string();
        let expected = validate::expected_version("expected_version", r.expected_version)?;
        let anchor = r.anchor.as_ref().map(|anchor| match anchor {
            move_backlog_item_in_sprint_request::Anchor::BeforeId(a) => {
                ("before_id", a.as_str(), true)
            }
            move_backlog_item_in_sprint_request::Anchor::AfterId(a) => {
                ("after_id", a.as_str(), false)
            }
        });
        let to = parse_move(RankScope::Sprint, &id, anchor)?;
        let item = self.commands.move_item(&tenant, &id, expected, &to).await?;
        Ok(Response::new(MoveBacklogItemInSprintResponse {
            backlog_item: Some(item_message(&item)),
        }))
    }

    async fn reconcile_backlog_item_status(
        &self,
        request: Request<ReconcileBacklogItemStatusRequest>,
    ) -> Reply<ReconcileBacklogItemStatusResponse> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let reconcile = parse_reconcile(&tenant, request.into_inner())?;
        let (item, outcome) = self.commands.reconcile(reconcile).await?;
        Ok(Response::new(ReconcileBacklogItemStatusResponse {
            backlog_item: Some(item_message(&item)),
            outcome: outcome.number(),
        }))
    }

    async fn reconcile_backlog_item_statuses(
        &self,
        request: Request<ReconcileBacklogItemStatusesRequest>,
    ) -> Reply<ReconcileBacklogItemStatusesResponse> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let reconciles = parse_reconciles(&tenant, request.into_inner().reconciles)?;
        // Submitted together, the bases land in the same group-commit batches: one
        // write (and on PostgreSQL one WAL flush) serves the whole call.
        let outcomes =
            futures::future::join_all(reconciles.into_iter().map(|r| self.commands.reconcile(r)))
                .await;
        let results = outcomes
            .into_iter()
            .map(|outcome| ReconcileResult {
                result: Some(match outcome {
                    Ok((item, outcome)) => {
                        reconcile_result::Result::Reconciled(ReconcileBacklogItemStatusResponse {
                            backlog_item: Some(item_message(&item)),
                            outcome: outcome.number(),
                        })
                    }
                    Err(error) => {
                        let status = GrpcStatus::from(error);
                        reconcile_result::Result::Error(ReconcileError {
                            code: status.code() as i32,
                            message: status.message().to_owned(),
                        })
                    }
                }),
            })
            .collect();
        Ok(Response::new(ReconcileBacklogItemStatusesResponse {
            results,
        }))
    }
}
