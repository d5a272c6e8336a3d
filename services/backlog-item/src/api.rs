//! The backlog-item service's gRPC adapter: parse, apply the status machine or ranking in
//! one transaction with the outbox events, map errors.

use agilepm_platform::auth::caller;
use agilepm_platform::db::{Db, UnitOfWork};
use agilepm_platform::error::{AppError, AppResult};
use agilepm_platform::optimistic::{Attempt, check_version, retry_lost_races};
use agilepm_platform::outbox;
use agilepm_platform::time::{now_micros, timestamp};
use agilepm_platform::{paging, validate};
use agilepm_proto::EventType;
use agilepm_proto::backlog::v1::backlog_item_service_server::BacklogItemService;
use agilepm_proto::backlog::v1::*;
use agilepm_proto::common::v1::StatusTransitionMode;
use tonic::{Request, Response, Status as GrpcStatus};
use uuid::Uuid;

use crate::domain::{self, Placement, TaskBasis};
use crate::events::{status_changed, subject};
use crate::mapping::{place, placement};
use crate::reconciles::{Reconcile, Reconciler};
use crate::store::{self, ListQuery};
use agilepm_platform::ranked::Anchor;

type Reply<T> = Result<Response<T>, GrpcStatus>;

/// The backlog-item service's gRPC adapter.
#[derive(Clone)]
pub struct BacklogItemApi {
    db: Db,
    reconciles: Reconciler,
}

async fn append<E: EventType>(
    uow: &mut UnitOfWork,
    item: &BacklogItem,
    event: &E,
) -> AppResult<()> {
    outbox::append(uow, subject(item), event).await?;
    Ok(())
}

/// The events a change from `before` to `after` by a command (not reconciliation) implies.
async fn emit_placement_events(
    uow: &mut UnitOfWork,
    before: &BacklogItem,
    after: &BacklogItem,
) -> AppResult<()> {
    let (id, tenant, product) = (
        after.id.clone(),
        after.tenant_id.clone(),
        after.product_id.clone(),
    );
    if before.sprint_id != after.sprint_id && !before.sprint_id.is_empty() {
        let event = BacklogItemUncommitted {
            backlog_item_id: id.clone(),
            tenant_id: tenant.clone(),
            product_id: product.clone(),
            sprint_id: before.sprint_id.clone(),
        };
        append(uow, after, &event).await?;
    }
    if before.release_id != after.release_id && !before.release_id.is_empty() {
        let event = BacklogItemUnscheduled {
            backlog_item_id: id.clone(),
            tenant_id: tenant.clone(),
            product_id: product.clone(),
            release_id: before.release_id.clone(),
        };
        append(uow, after, &event).await?;
    }
    if before.release_id != after.release_id && !after.release_id.is_empty() {
        let event = BacklogItemScheduled {
            backlog_item_id: id.clone(),
            tenant_id: tenant.clone(),
            product_id: product.clone(),
            release_id: after.release_id.clone(),
        };
        append(uow, after, &event).await?;
    }
    if before.sprint_id != after.sprint_id && !after.sprint_id.is_empty() {
        let event = BacklogItemCommitted {
            backlog_item_id: id.clone(),
            tenant_id: tenant.clone(),
            product_id: product.clone(),
            sprint_id: after.sprint_id.clone(),
        };
        append(uow, after, &event).await?;
    }
    if after.status == BacklogItemStatus::Removed as i32 && before.status != after.status {
        let event = BacklogItemMarkedAsRemoved {
            backlog_item_id: id.clone(),
            tenant_id: tenant.clone(),
            product_id: product.clone(),
        };
        append(uow, after, &event).await?;
    }
    if before.status != after.status || before.awaiting_acceptance != after.awaiting_acceptance {
        let event = status_changed(before, after, StatusChangeCause::Command, None);
        append(uow, after, &event).await?;
    }
    Ok(())
}

impl BacklogItemApi {
    /// An adapter over `db`.
    /// Starts the reconcile writer, so it must be called inside the tokio runtime.
    pub fn new(db: Db) -> BacklogItemApi {
        let reconciles = crate::reconciles::start(db.clone());
        BacklogItemApi { db, reconciles }
    }

    /// Applies `change` to item `id` with compare-and-set on its version, then the events
    /// `emit` derives from before/after. A change that changes nothing writes nothing.
    async fn mutate<C, E>(
        &self,
        tenant: &str,
        id: &str,
        expected_version: Option<i64>,
        change: C,
        emit: E,
    ) -> AppResult<BacklogItem>
    where
        C: Fn(&BacklogItem) -> AppResult<BacklogItem>,
        E: AsyncFn(&mut UnitOfWork, &BacklogItem, &BacklogItem) -> AppResult<()>,
    {
        let what = format!("backlog item {id}");
        retry_lost_races(&what, expected_version, || async {
            let mut uow = self.db.begin().await?;
            let before = store::get(uow.conn(), tenant, id)
                .await?
                .ok_or_else(|| AppError::not_found(&what))?;
            check_version(&what, expected_version, before.version)?;
            let mut after = change(&before)?;
            if after == before {
                return Ok(Attempt::Done(before));
            }
            let now = now_micros();
            after.version = before.version + 1;
            after.update_time = Some(timestamp(now));
            if !store::update(&mut uow, &after, before.version, now).await? {
                return Ok(Attempt::LostRace);
            }
            emit(&mut uow, &before, &after).await?;
            uow.commit().await?;
            Ok(Attempt::Done(after))
        })
        .await
    }

    async fn transition(
        &self,
        tenant: &str,
        id: &str,
        expected_version: Option<i64>,
        rule: impl Fn(&Placement) -> AppResult<Placement>,
    ) -> AppResult<BacklogItem> {
        self.mutate(
            tenant,
            id,
            expected_version,
            |before| Ok(place(before, &rule(&placement(before))?)),
            async |uow, before, after| emit_placement_events(uow, before, after).await,
        )
        .await
    }

    async fn plan(&self, tenant: &str, request: PlanBacklogItemRequest) -> AppResult<BacklogItem> {
        let request_id = validate::request_id("request_id", &request.request_id)?;
        let product_id = validate::uuid("product_id", &request.product_id)?.to_string();
        let summary = validate::name("summary", &request.summary)?;
        let story = validate::description("story", &request.story)?;
        let category = validate::text("category", &request.category, 0, 100)?;
        let item_type = parse_type("type", request.r#type)?;
        let story_points = parse_points("story_points", request.story_points)?;
        let priority =
            domain::business_priority("business_priority", request.business_priority.as_ref())?;
        let use_case_id = validate::optional_uuid("use_case_id", &request.use_case_id)?
            .map(|u| u.to_string())
            .unwrap_or_default();
        if request.derived_from_ids.len() > 100 {
            return Err(AppError::invalid("derived_from_ids", "at most 100"));
        }
        let derived_from_ids = request
            .derived_from_ids
            .iter()
            .map(|id| validate::uuid("derived_from_ids", id).map(|u| u.to_string()))
            .collect::<AppResult<Vec<_>>>()?;

        for _ in 0..agilepm_platform::optimistic::MAX_ATTEMPTS {
            let mut uow = self.db.begin().await?;
            if let Some(existing) = store::by_request_id(uow.conn(), tenant, &request_id).await? {
                return Ok(existing);
            }
            check_references(&mut uow, tenant, &product_id, &derived_from_ids).await?;
            let rank = store::BACKLOG
                .key_at_end(uow.conn(), tenant, &product_id)
                .await?;
            let now = now_micros();
            let item = BacklogItem {
                id: Uuid::now_v7().to_string(),
                tenant_id: tenant.to_owned(),
                product_id: product_id.clone(),
                summary: summary.clone(),
                story: story.clone(),
                category: category.clone(),
                r#type: item_type as i32,
                story_points: story_points as i32,
                business_priority: priority,
                priority_score: domain::priority_score(priority.as_ref()),
                use_case_id: use_case_id.clone(),
                release_id: String::new(),
                sprint_id: String::new(),
                status: BacklogItemStatus::Planned as i32,
                rank,
                derived_from_ids: derived_from_ids.clone(),
                awaiting_acceptance: false,
                version: 1,
                create_time: Some(timestamp(now)),
                update_time: Some(timestamp(now)),
                reconciled_task_revision: 0,
            };
            match store::insert(&mut uow, &item, &request_id, now)
                .await
                .map_err(AppError::from)
            {
                Ok(()) => {}
                // A concurrent plan took the same request id (answered on the next pass)
                // or the same rank (recomputed on the next pass).
                Err(AppError::AlreadyExists(_)) => continue,
                Err(other) => return Err(other),
            }
            append(
                &mut uow,
                &item,
                &BacklogItemPlanned {
                    backlog_item: Some(item.clone()),
                },
            )
            .await?;
            uow.commit().await?;
            return Ok(item);
        }
        Err(AppError::Aborted(
            "the product backlog is being changed by many writers at once; retry".into(),
        ))
    }

    async fn move_item(
        &self,
        tenant: &str,
        request: MoveBacklogItemRequest,
    ) -> AppResult<BacklogItem> {
        let id = validate::uuid("id", &request.id)?.to_string();
        let expected_version =
            validate::expected_version("expected_version", request.expected_version)?;
        let (anchor, before_anchor) = match &request.anchor {
            Some(move_backlog_item_request::Anchor::BeforeId(a)) => {
                (validate::uuid("before_id", a)?.to_string(), true)
            }
            Some(move_backlog_item_request::Anchor::AfterId(a)) => {
                (validate::uuid("after_id", a)?.to_string(), false)
            }
            None => return Err(AppError::invalid("anchor", "name before_id or after_id")),
        };
        if anchor == id {
            return Err(AppError::invalid(
                if before_anchor {
                    "before_id"
                } else {
                    "after_id"
                },
                "an item cannot move relative to itself",
            ));
        }
        let what = format!("backlog item {id}");
        retry_lost_races(&what, expected_version, || async {
            let mut uow = self.db.begin().await?;
            let before = store::get(uow.conn(), tenant, &id)
                .await?
                .ok_or_else(|| AppError::not_found(&what))?;
            check_version(&what, expected_version, before.version)?;
            let anchor_item = store::get(uow.conn(), tenant, &anchor)
                .await?
                .ok_or_else(|| AppError::not_found(format!("backlog item {anchor}")))?;
            if anchor_item.product_id != before.product_id {
                return Err(AppError::precondition(
                    "items can only be moved within their own product backlog",
                ));
            }
            let place = Anchor {
                id: &anchor,
                rank: &anchor_item.rank,
                before: before_anchor,
            };
            let new_rank = store::BACKLOG
                .key_next_to(
                    uow.conn(),
                    &before.tenant_id,
                    &before.product_id,
                    &id,
                    place,
                )
                .await?;
            let now = now_micros();
            let after = BacklogItem {
                rank: new_rank,
                version: before.version + 1,
                update_time: Some(timestamp(now)),
                ..before.clone()
            };
            if !store::update(&mut uow, &after, before.version, now).await? {
                return Ok(Attempt::LostRace);
            }
            let event = BacklogItemRanked {
                backlog_item_id: id.clone(),
                tenant_id: tenant.to_owned(),
                product_id: after.product_id.clone(),
                rank: after.rank.clone(),
            };
            append(&mut uow, &after, &event).await?;
            uow.commit().await?;
            Ok(Attempt::Done(after))
        })
        .await
    }

    /// Applies one basis through the reconcile group commit.
    async fn reconcile(
        &self,
        tenant: &str,
        request: ReconcileBacklogItemStatusRequest,
    ) -> AppResult<(BacklogItem, ReconcileOutcome)> {
        let reconcile = parse_reconcile(tenant, request)?;
        self.reconciles.submit(reconcile).await
    }
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
        actor: agilepm_platform::auth::acting_subject().unwrap_or_default(),
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

fn parse_type(field: &str, value: i32) -> AppResult<BacklogItemType> {
    match BacklogItemType::try_from(value) {
        Ok(BacklogItemType::Unspecified) => Ok(BacklogItemType::Feature),
        Ok(item_type) => Ok(item_type),
        Err(_) => Err(AppError::invalid(field, format!("unknown type {value}"))),
    }
}

fn parse_points(field: &str, value: i32) -> AppResult<StoryPoints> {
    StoryPoints::try_from(value)
        .map_err(|_| AppError::invalid(field, format!("unknown story points value {value}")))
}

/// Applies an update mask's fields onto `item` (validated).
fn apply_update(
    item: &BacklogItem,
    update: &BacklogItem,
    paths: &[String],
) -> AppResult<BacklogItem> {
    if item.status == BacklogItemStatus::Removed as i32 {
        return Err(AppError::precondition("REMOVED items cannot be changed"));
    }
    let mut after = item.clone();
    for path in paths {
        match path.as_str() {
            "summary" => after.summary = validate::name("backlog_item.summary", &update.summary)?,
            "story" => after.story = validate::description("backlog_item.story", &update.story)?,
            "category" => {
                after.category = validate::text("backlog_item.category", &update.category, 0, 100)?
            }
            "type" => after.r#type = parse_type("backlog_item.type", update.r#type)? as i32,
            "story_points" => {
                after.story_points =
                    parse_points("backlog_item.story_points", update.story_points)? as i32
            }
            "business_priority" => {
                after.business_priority = domain::business_priority(
                    "backlog_item.business_priority",
                    update.business_priority.as_ref(),
                )?;
                after.priority_score = domain::priority_score(after.business_priority.as_ref());
            }
            "use_case_id" => {
                after.use_case_id =
                    validate::optional_uuid("backlog_item.use_case_id", &update.use_case_id)?
                        .map(|u| u.to_string())
                        .unwrap_or_default();
            }
            other => {
                return Err(AppError::invalid(
                    "update_mask",
                    format!(
                        "{other:?} cannot be updated (summary, story, category, type, story_points, business_priority, use_case_id can)"
                    ),
                ));
            }
        }
    }
    Ok(after)
}

/// The events of a story-field update, one per changed field.
async fn emit_field_events(
    uow: &mut UnitOfWork,
    before: &BacklogItem,
    after: &BacklogItem,
) -> AppResult<()> {
    let (id, tenant) = (after.id.clone(), after.tenant_id.clone());
    if before.summary != after.summary {
        append(
            uow,
            after,
            &BacklogItemSummarized {
                backlog_item_id: id.clone(),
                tenant_id: tenant.clone(),
                summary: after.summary.clone(),
            },
        )
        .await?;
    }
    if before.story != after.story {
        append(
            uow,
            after,
            &BacklogItemStoryTold {
                backlog_item_id: id.clone(),
                tenant_id: tenant.clone(),
                story: after.story.clone(),
            },
        )
        .await?;
    }
    if before.category != after.category {
        append(
            uow,
            after,
            &BacklogItemCategoryChanged {
                backlog_item_id: id.clone(),
                tenant_id: tenant.clone(),
                category: after.category.clone(),
            },
        )
        .await?;
    }
    if before.r#type != after.r#type {
        append(
            uow,
            after,
            &BacklogItemTypeChanged {
                backlog_item_id: id.clone(),
                tenant_id: tenant.clone(),
                r#type: after.r#type,
            },
        )
        .await?;
    }
    if before.story_points != after.story_points {
        append(
            uow,
            after,
            &BacklogItemStoryPointsAssigned {
                backlog_item_id: id.clone(),
                tenant_id: tenant.clone(),
                story_points: after.story_points,
            },
        )
        .await?;
    }
    if before.business_priority != after.business_priority {
        let event = BacklogItemBusinessPriorityAssigned {
            backlog_item_id: id.clone(),
            tenant_id: tenant.clone(),
            business_priority: after.business_priority,
            priority_score: after.priority_score,
        };
        append(uow, after, &event).await?;
    }
    if before.use_case_id != after.use_case_id {
        append(
            uow,
            after,
            &BacklogItemUseCaseChanged {
                backlog_item_id: id,
                tenant_id: tenant,
                use_case_id: after.use_case_id.clone(),
            },
        )
        .await?;
    }
    Ok(())
}

fn page_after(token: &str) -> AppResult<Option<(f64, String)>> {
    let Some(key) = paging::decode_token("page_token", token)? else {
        return Ok(None);
    };
    let (score, rank) = key
        .split_once('|')
        .ok_or_else(|| AppError::invalid("page_token", "malformed page token"))?;
    let score = score
        .parse()
        .map_err(|_| AppError::invalid("page_token", "malformed page token"))?;
    Ok(Some((score, rank.to_owned())))
}

/// A new item references a product the planning service recorded for this tenant (never
/// an orphan), and items of this tenant it was derived from.
async fn check_references(
    uow: &mut UnitOfWork,
    tenant: &str,
    product_id: &str,
    derived_from_ids: &[String],
) -> AppResult<()> {
    if !store::product_exists(uow.conn(), tenant, product_id).await? {
        return Err(AppError::precondition(format!(
            "product_id: product {product_id} does not exist; create it in the planning service first"
        )));
    }
    let mut derived: Vec<&str> = derived_from_ids.iter().map(String::as_str).collect();
    derived.sort_unstable();
    derived.dedup();
    let engine = uow.engine();
    if store::count_of_tenant(uow.conn(), engine, tenant, &derived).await? != derived.len() {
        return Err(AppError::precondition(
            "derived_from_ids: every item named must be a backlog item of this tenant",
        ));
    }
    Ok(())
}

/// Most product facts one SyncProducts call may carry.
const MAX_PRODUCT_FACTS: usize = 1000;

#[tonic::async_trait]
impl BacklogItemService for BacklogItemApi {
    async fn sync_products(
        &self,
        request: Request<SyncProductsRequest>,
    ) -> Reply<SyncProductsResponse> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let products = request.into_inner().products;
        if products.is_empty() || products.len() > MAX_PRODUCT_FACTS {
            return Err(AppError::invalid(
                "products",
                format!(
                    "must hold 1 to {MAX_PRODUCT_FACTS} facts, not {}",
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
                let mode = match StatusTransitionMode::try_from(fact.status_transition_mode) {
                    Ok(StatusTransitionMode::Unspecified) => StatusTransitionMode::Automatic,
                    Ok(mode) => mode,
                    Err(_) => {
                        return Err(AppError::invalid(
                            format!("products[{i}].status_transition_mode"),
                            "unknown mode",
                        ));
                    }
                };
                if fact.product_version < 1 {
                    return Err(AppError::invalid(
                        format!("products[{i}].product_version"),
                        "must be at least 1",
                    ));
                }
                Ok((id.to_string(), mode, fact.product_version))
            })
            .collect::<AppResult<Vec<_>>>()?;
        let applied = store::record_products(&self.db, &tenant, &facts).await?;
        Ok(Response::new(SyncProductsResponse {
            applied: applied as i32,
        }))
    }

    async fn plan_backlog_item(
        &self,
        request: Request<PlanBacklogItemRequest>,
    ) -> Reply<PlanBacklogItemResponse> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let item = self.plan(&tenant, request.into_inner()).await?;
        Ok(Response::new(PlanBacklogItemResponse {
            backlog_item: Some(item),
        }))
    }

    async fn get_backlog_item(
        &self,
        request: Request<GetBacklogItemRequest>,
    ) -> Reply<GetBacklogItemResponse> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let id = validate::uuid("id", &request.get_ref().id)?.to_string();
        let mut conn = self.db.pool().acquire().await.map_err(AppError::from)?;
        let item = store::get(&mut conn, &tenant, &id)
            .await
            .map_err(AppError::from)?
            .ok_or_else(|| AppError::not_found(format!("backlog item {id}")))?;
        Ok(Response::new(GetBacklogItemResponse {
            backlog_item: Some(item),
        }))
    }

    async fn list_backlog_items(
        &self,
        request: Request<ListBacklogItemsRequest>,
    ) -> Reply<ListBacklogItemsResponse> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let by_priority = match r.order_by.trim() {
            "" | "rank" => false,
            "priority_score desc" => true,
            other => {
                return Err(AppError::invalid(
                    "order_by",
                    format!(
                        "{}: use \"rank\" or \"priority_score desc\"",
                        agilepm_platform::error::shown(other)
                    ),
                )
                .into());
            }
        };
        let statuses = r
            .statuses
            .iter()
            .map(|s| match BacklogItemStatus::try_from(*s) {
                Ok(BacklogItemStatus::Unspecified) | Err(_) => {
                    Err(AppError::invalid("statuses", format!("unknown status {s}")))
                }
                Ok(status) => Ok(status as i32),
            })
            .collect::<AppResult<Vec<_>>>()?;
        let item_type = match r.r#type {
            0 => 0,
            value => parse_type("type", value)? as i32,
        };
        let query = ListQuery {
            tenant,
            product_id: validate::uuid("product_id", &r.product_id)?.to_string(),
            statuses,
            release_id: validate::optional_uuid("release_id", &r.release_id)?
                .map(|u| u.to_string())
                .unwrap_or_default(),
            sprint_id: validate::optional_uuid("sprint_id", &r.sprint_id)?
                .map(|u| u.to_string())
                .unwrap_or_default(),
            use_case_id: validate::optional_uuid("use_case_id", &r.use_case_id)?
                .map(|u| u.to_string())
                .unwrap_or_default(),
            item_type,
            by_priority,
            after: page_after(&r.page_token)?,
            limit: validate::page_size("page_size", r.page_size, 100, 1000)? + 1,
        };
        let mut items = store::list(&self.db, &query)
            .await
            .map_err(AppError::from)?;
        let next_page_token = if items.len() == query.limit as usize {
            items.pop();
            items
                .last()
                .map(|last| paging::encode_token(&format!("{}|{}", last.priority_score, last.rank)))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListBacklogItemsResponse {
            backlog_items: items,
            next_page_token,
        }))
    }

    async fn update_backlog_item(
        &self,
        request: Request<UpdateBacklogItemRequest>,
    ) -> Reply<UpdateBacklogItemResponse> {
        let tenant = caller(&request)?.tenant()?.to_owned();
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
        let item = self
            .mutate(
                &tenant,
                &id,
                expected,
                |before| apply_update(before, &update, &paths),
                async |uow, before, after| emit_field_events(uow, before, after).await,
            )
            .await?;
        Ok(Response::new(UpdateBacklogItemResponse {
            backlog_item: Some(item),
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
            .transition(&tenant, &id, expected, |p| domain::schedule(p, &release))
            .await?;
        Ok(Response::new(ScheduleBacklogItemResponse {
            backlog_item: Some(item),
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
            .transition(&tenant, &id, expected, domain::unschedule)
            .await?;
        Ok(Response::new(UnscheduleBacklogItemResponse {
            backlog_item: Some(item),
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
            .transition(&tenant, &id, expected, |p| domain::commit(p, &sprint))
            .await?;
        Ok(Response::new(CommitBacklogItemResponse {
            backlog_item: Some(item),
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
            .transition(&tenant, &id, expected, domain::uncommit)
            .await?;
        Ok(Response::new(UncommitBacklogItemResponse {
            backlog_item: Some(item),
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
            .transition(&tenant, &id, expected, domain::remove)
            .await?;
        Ok(Response::new(RemoveBacklogItemResponse {
            backlog_item: Some(item),
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
            .transition(&tenant, &id, expected, domain::mark_done)
            .await?;
        Ok(Response::new(MarkBacklogItemDoneResponse {
            backlog_item: Some(item),
        }))
    }

    async fn move_backlog_item(
        &self,
        request: Request<MoveBacklogItemRequest>,
    ) -> Reply<MoveBacklogItemResponse> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let item = self.move_item(&tenant, request.into_inner()).await?;
        Ok(Response::new(MoveBacklogItemResponse {
            backlog_item: Some(item),
        }))
    }

    async fn reconcile_backlog_item_status(
        &self,
        request: Request<ReconcileBacklogItemStatusRequest>,
    ) -> Reply<ReconcileBacklogItemStatusResponse> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let (item, outcome) = self.reconcile(&tenant, request.into_inner()).await?;
        Ok(Response::new(ReconcileBacklogItemStatusResponse {
            backlog_item: Some(item),
            outcome: outcome as i32,
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
            futures::future::join_all(reconciles.into_iter().map(|r| self.reconciles.submit(r)))
                .await;
        let results = outcomes
            .into_iter()
            .map(|outcome| ReconcileResult {
                result: Some(match outcome {
                    Ok((item, outcome)) => {
                        reconcile_result::Result::Reconciled(ReconcileBacklogItemStatusResponse {
                            backlog_item: Some(item),
                            outcome: outcome as i32,
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
