//! The backlog-item service's units of work. Each loads the item, decides with the rules
//! of `domain`, and saves the item with the events `events` derives from the change, in
//! one transaction. Reconciles go through the group commit of `reconcile_batch`.

pub mod reconcile_batch;

use agilepm_platform::domain::error::{AppError, AppResult};
use agilepm_platform::domain::time::now_micros;
use agilepm_platform::storage::db::{Db, UnitOfWork};
use agilepm_platform::storage::optimistic::{self, Attempt, check_version, retry_lost_races};
use agilepm_platform::storage::outbox::{self, NewEvent};
use agilepm_platform::storage::ranked::Anchor;
use agilepm_proto::backlog::v1::StatusChangeCause;
use uuid::Uuid;

use crate::domain::{
    self, BacklogItem, BusinessPriority, ItemType, Outcome, Placement, StoryPoints, TaskBasis,
    TransitionMode,
};
use crate::events;
use crate::store;
pub use reconcile_batch::{Reconcile, ReconcileBatch, Reconciler};

/// A new item as a (checked) plan request describes it.
#[derive(Debug, Clone)]
pub struct NewItem {
    /// The request's idempotency key.
    pub request_id: String,
    /// Product it belongs to.
    pub product_id: String,
    /// One-line summary.
    pub summary: String,
    /// The story.
    pub story: String,
    /// Category.
    pub category: String,
    /// Kind of work.
    pub item_type: ItemType,
    /// Size.
    pub story_points: StoryPoints,
    /// Ratings, if rated.
    pub business_priority: Option<BusinessPriority>,
    /// Use case, empty if none.
    pub use_case_id: String,
    /// Items it was derived from.
    pub derived_from_ids: Vec<String>,
}

/// Which order a move changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankScope {
    /// The product backlog (`rank`).
    Product,
    /// The item's sprint (`sprint_rank`); the product backlog is untouched.
    Sprint,
}

/// Where a moved item goes: next to another item of its backlog or sprint.
#[derive(Debug, Clone)]
pub struct MoveTo {
    /// The order that changes.
    pub scope: RankScope,
    /// The item it goes next to.
    pub anchor_id: String,
    /// Before the anchor (true) or after it.
    pub before: bool,
}

/// The backlog-item service's commands, over its database.
#[derive(Clone)]
pub struct Commands {
    db: Db,
    reconciles: Reconciler,
}

impl Commands {
    /// Commands on `db`. Starts the reconcile writer, so it must be called inside the
    /// tokio runtime.
    pub fn new(db: Db) -> Commands {
        let reconciles = reconcile_batch::start(db.clone());
        Commands { db, reconciles }
    }

    /// Plans `new` at the bottom of its product's backlog, or returns the item an earlier
    /// plan with the same request id created.
    pub async fn plan(&self, tenant: &str, new: NewItem) -> AppResult<BacklogItem> {
        for _ in 0..optimistic::MAX_ATTEMPTS {
            let mut uow = self.db.begin().await?;
            if let Some(existing) =
                store::by_request_id(uow.conn(), tenant, &new.request_id).await?
            {
                return Ok(existing);
            }
            let item = new_item(&mut uow, tenant, &new).await?;
            match store::insert(&mut uow, &item, &new.request_id).await {
                Ok(()) => {}
                // A concurrent plan took the same request id (answered on the next pass)
                // or the same rank (recomputed on the next pass).
                Err(AppError::AlreadyExists(_)) => continue,
                Err(other) => return Err(other),
            }
            outbox::append_all(&mut uow, &[events::planned(&item)]).await?;
            uow.commit().await?;
            return Ok(item);
        }
        Err(AppError::Aborted(
            "the product backlog is being changed by many writers at once; retry".into(),
        ))
    }

    /// The planning game's split or group in one transaction: plans `stories` and
    /// removes `remove_ids`, each removal guarded by the version it was read at, so an
    /// original committed meanwhile undoes the whole move (and the retry refuses it).
    /// A retry of a move that landed (its first story exists) answers what it made.
    /// Returns the stories and the removed items, in request order.
    pub async fn reshape(
        &self,
        tenant: &str,
        remove_ids: &[String],
        stories: &[NewItem],
    ) -> AppResult<(Vec<BacklogItem>, Vec<BacklogItem>)> {
        let first = stories
            .first()
            .ok_or_else(|| AppError::invalid("stories", "at least one"))?;
        retry_lost_races("the items reshaped", None, || async {
            let mut uow = self.db.begin().await?;
            if store::by_request_id(uow.conn(), tenant, &first.request_id)
                .await?
                .is_some()
            {
                return Ok(Attempt::Done(landed(&mut uow, tenant, remove_ids, stories).await?));
            }
            let mut originals = Vec::with_capacity(remove_ids.len());
            for id in remove_ids {
                let item = current(&mut uow, tenant, id, &format!("backlog item {id}"), None).await?;
                if item.product_id != first.product_id {
                    return Err(AppError::precondition(format!(
                        "backlog item {id} belongs to another product than the stories"
                    )));
                }
                if !matches!(item.placement.status, domain::Status::Planned | domain::Status::Scheduled) {
                    return Err(AppError::precondition(format!(
                        "backlog item {id} must be PLANNED or SCHEDULED to be split or grouped (it is {})",
                        item.placement.status.name()
                    )));
                }
                originals.push(item);
            }
            let mut made = Vec::with_capacity(stories.len());
            for new in stories {
                let item = new_item(&mut uow, tenant, new).await?;
                match store::insert(&mut uow, &item, &new.request_id).await {
                    Ok(()) => made.push(item),
                    Err(AppError::AlreadyExists(_)) => return Ok(Attempt::LostRace),
                    Err(other) => return Err(other),
                }
            }
            let now = now_micros();
            let mut removed = Vec::with_capacity(originals.len());
            for before in &originals {
                let after = BacklogItem {
                    placement: domain::remove(&before.placement)?,
                    version: before.version + 1,
                    update_time_us: now,
                    ..before.clone()
                };
                // Committed (or otherwise changed) since it was read: nothing of the move
                // stands, and the next pass decides on what it is now.
                if !store::update(&mut uow, &after, before.version).await? {
                    return Ok(Attempt::LostRace);
                }
                store::record_membership(&mut uow, before, &after, now).await?;
                removed.push(after);
            }
            let mut all: Vec<NewEvent<'_>> = made.iter().map(events::planned).collect();
            for (before, after) in originals.iter().zip(&removed) {
                all.extend(events::changed(before, after));
            }
            outbox::append_all(&mut uow, &all).await?;
            drop(all);
            uow.commit().await?;
            Ok(Attempt::Done((made, removed)))
        })
        .await
    }

    /// Applies `change` to item `id` with compare-and-set on its version, with the events
    /// the change implies. A change that moves the item's placement is settled against
    /// its last task basis and its product's mode in the same transaction (a commit of an
    /// item whose tasks are finished ends DONE, or awaiting acceptance). A change that
    /// changes nothing writes nothing. Without `expected_version` a lost race is retried
    /// on fresh state; with it, the caller gets ABORTED.
    pub async fn change(
        &self,
        tenant: &str,
        id: &str,
        expected_version: Option<i64>,
        change: impl Fn(&BacklogItem) -> AppResult<BacklogItem>,
    ) -> AppResult<BacklogItem> {
        let what = format!("backlog item {id}");
        retry_lost_races(&what, expected_version, || async {
            let mut uow = self.db.begin().await?;
            let before = current(&mut uow, tenant, id, &what, expected_version).await?;
            let commanded = change(&before)?;
            if commanded == before {
                return Ok(Attempt::Done(before));
            }
            let settled = settle(&mut uow, &before, &commanded).await?;
            save(uow, &before, &commanded, settled).await
        })
        .await
    }

    /// Changes item `id`'s story fields; a use case it is given must be one planning
    /// recorded for the item's tenant and product (the product never changes, so it is
    /// checked before the change).
    pub async fn change_story(
        &self,
        tenant: &str,
        id: &str,
        expected_version: Option<i64>,
        changes: &[domain::StoryChange],
    ) -> AppResult<BacklogItem> {
        let use_case = changes.iter().find_map(|change| match change {
            domain::StoryChange::UseCase(use_case) if !use_case.is_empty() => Some(use_case),
            _ => None,
        });
        if let Some(use_case) = use_case {
            let mut uow = self.db.begin().await?;
            let item = store::get(uow.conn(), tenant, id)
                .await?
                .ok_or_else(|| AppError::not_found(format!("backlog item {id}")))?;
            check_use_case(&mut uow, tenant, &item.product_id, use_case).await?;
        }
        self.change(tenant, id, expected_version, |before| {
            domain::change_story(before, changes)
        })
        .await
    }

    /// Moves a placement through the status machine with `rule`.
    pub async fn transition(
        &self,
        tenant: &str,
        id: &str,
        expected_version: Option<i64>,
        rule: impl Fn(&Placement) -> AppResult<Placement>,
    ) -> AppResult<BacklogItem> {
        self.change(tenant, id, expected_version, |before| {
            Ok(BacklogItem {
                placement: rule(&before.placement)?,
                ..before.clone()
            })
        })
        .await
    }

    /// Moves item `id` next to another item of its product backlog, or of its sprint.
    pub async fn move_item(
        &self,
        tenant: &str,
        id: &str,
        expected_version: Option<i64>,
        to: &MoveTo,
    ) -> AppResult<BacklogItem> {
        let what = format!("backlog item {id}");
        retry_lost_races(&what, expected_version, || async {
            let mut uow = self.db.begin().await?;
            let before = current(&mut uow, tenant, id, &what, expected_version).await?;
            let anchor = store::get(uow.conn(), tenant, &to.anchor_id)
                .await?
                .ok_or_else(|| AppError::not_found(format!("backlog item {}", to.anchor_id)))?;
            let (list, scope_id, key, anchor_key) = match to.scope {
                RankScope::Product => {
                    if anchor.product_id != before.product_id {
                        return Err(AppError::precondition(
                            "items can only be moved within their own product backlog",
                        ));
                    }
                    (&store::BACKLOG, &before.product_id, &before.rank, &anchor.rank)
                }
                RankScope::Sprint => {
                    domain::rank_in_sprint(&before.placement)?;
                    if anchor.placement.sprint_id != before.placement.sprint_id {
                        return Err(AppError::precondition(format!(
                            "items can only be moved within their own sprint ({}); backlog item {} is not in it",
                            before.placement.sprint_id, anchor.id
                        )));
                    }
                    let sprint = &before.placement.sprint_id;
                    (&store::SPRINT_BACKLOG, sprint, &before.sprint_rank, &anchor.sprint_rank)
                }
            };
            let place = Anchor {
                id: &anchor.id,
                rank: anchor_key,
                before: to.before,
            };
            let new_key = list
                .key_next_to(uow.conn(), tenant, scope_id, (id, key), place)
                .await?;
            if &new_key == key {
                // Already in that place (a retried move): nothing to write.
                return Ok(Attempt::Done(before));
            }
            let mut after = before.clone();
            match to.scope {
                RankScope::Product => after.rank = new_key,
                RankScope::Sprint => after.sprint_rank = new_key,
            }
            save(uow, &before, &after, after.clone()).await
        })
        .await
    }

    /// Applies one task-hours basis through the reconcile group commit.
    pub async fn reconcile(&self, reconcile: Reconcile) -> AppResult<(BacklogItem, Outcome)> {
        self.reconciles.submit(reconcile).await
    }

    /// Records what the planning service says of `tenant`'s products (id, transition
    /// mode, product version), and in the same transaction releases what a switch to
    /// AUTOMATIC releases: the items awaiting acceptance with no hours left become DONE
    /// (once: the write is guarded by their versions). A switch to MANUAL moves nothing
    /// already DONE. Returns how many facts were applied.
    pub async fn sync_products(
        &self,
        tenant: &str,
        facts: &[(String, TransitionMode, i64)],
    ) -> AppResult<u64> {
        let mut products: Vec<&str> = facts
            .iter()
            .filter(|(_, mode, _)| *mode == TransitionMode::Automatic)
            .map(|(id, _, _)| id.as_str())
            .collect();
        products.sort_unstable();
        products.dedup();
        retry_lost_races("the products' items", None, || async {
            let mut uow = self.db.begin().await?;
            let applied = store::record_products(&mut uow, tenant, facts).await?;
            let waiting =
                store::awaiting_in_automatic_products(&mut uow, tenant, &products).await?;
            let now = now_micros();
            let mut released = Vec::with_capacity(waiting.len());
            for before in waiting {
                let placement =
                    domain::settle(&before.placement, before.tasks, TransitionMode::Automatic);
                let after = BacklogItem {
                    placement,
                    version: before.version + 1,
                    update_time_us: now,
                    ..before.clone()
                };
                if !store::update(&mut uow, &after, before.version).await? {
                    return Ok(Attempt::LostRace);
                }
                released.push((before, after));
            }
            let events: Vec<_> = released
                .iter()
                .map(|(before, after)| {
                    let cause = StatusChangeCause::TransitionMode;
                    let event = events::status_changed(before, after, cause, Some(before.tasks));
                    NewEvent::of(events::subject(after), &event)
                })
                .collect();
            outbox::append_all(&mut uow, &events).await?;
            uow.commit().await?;
            Ok(Attempt::Done(applied))
        })
        .await
    }
}

/// A new item of `tenant` as `new` describes it, at the end of its product backlog, its
/// references checked, in `uow` (not yet stored).
async fn new_item(uow: &mut UnitOfWork, tenant: &str, new: &NewItem) -> AppResult<BacklogItem> {
    check_references(uow, tenant, &new.product_id, &new.derived_from_ids).await?;
    check_use_case(uow, tenant, &new.product_id, &new.use_case_id).await?;
    let rank = store::BACKLOG
        .key_at_end(uow.conn(), tenant, &new.product_id)
        .await?;
    let now = now_micros();
    Ok(BacklogItem {
        id: Uuid::now_v7().to_string(),
        tenant_id: tenant.to_owned(),
        product_id: new.product_id.clone(),
        summary: new.summary.clone(),
        story: new.story.clone(),
        category: new.category.clone(),
        item_type: new.item_type,
        story_points: new.story_points,
        business_priority: new.business_priority,
        use_case_id: new.use_case_id.clone(),
        placement: Placement::planned(),
        rank,
        sprint_rank: String::new(),
        derived_from_ids: new.derived_from_ids.clone(),
        tasks: TaskBasis::default(),
        version: 1,
        create_time_us: now,
        update_time_us: now,
    })
}

/// What a reshape that already landed made and removed, read back for its retry.
async fn landed(
    uow: &mut UnitOfWork,
    tenant: &str,
    remove_ids: &[String],
    stories: &[NewItem],
) -> AppResult<(Vec<BacklogItem>, Vec<BacklogItem>)> {
    let mut made = Vec::with_capacity(stories.len());
    for new in stories {
        made.push(
            store::by_request_id(uow.conn(), tenant, &new.request_id)
                .await?
                .ok_or_else(|| {
                    AppError::precondition(format!(
                        "request_id {} was used for another move; use new ids",
                        new.request_id
                    ))
                })?,
        );
    }
    let mut removed = Vec::with_capacity(remove_ids.len());
    for id in remove_ids {
        removed.push(current(uow, tenant, id, &format!("backlog item {id}"), None).await?);
    }
    Ok((made, removed))
}

/// Item `id` of `tenant` (`what` in refusals), at `expected_version` if one is given.
async fn current(
    uow: &mut UnitOfWork,
    tenant: &str,
    id: &str,
    what: &str,
    expected_version: Option<i64>,
) -> AppResult<BacklogItem> {
    let item = store::get(uow.conn(), tenant, id)
        .await?
        .ok_or_else(|| AppError::not_found(what))?;
    check_version(what, expected_version, item.version)?;
    Ok(item)
}

/// `commanded` as the rules leave it when the command moved its placement: settled
/// against its last task basis and its product's mode ([`domain::settle`]), so no command
/// leaves a status that contradicts hours and mode.
async fn settle(
    uow: &mut UnitOfWork,
    before: &BacklogItem,
    commanded: &BacklogItem,
) -> AppResult<BacklogItem> {
    if commanded.placement == before.placement {
        return Ok(commanded.clone());
    }
    let mode = store::mode_of(uow.conn(), &commanded.tenant_id, &commanded.product_id).await?;
    Ok(BacklogItem {
        placement: domain::settle(&commanded.placement, commanded.tasks, mode),
        ..commanded.clone()
    })
}

/// Writes `after` over `before` (guarded by its version) with the events of the command
/// (`before` to `commanded`) and, where settling moved the status further (`commanded` to
/// `after`), its status change caused by the task hours; and commits.
async fn save(
    mut uow: UnitOfWork,
    before: &BacklogItem,
    commanded: &BacklogItem,
    mut after: BacklogItem,
) -> AppResult<Attempt<BacklogItem>> {
    after.version = before.version + 1;
    after.update_time_us = now_micros();
    if after.placement.sprint_id != before.placement.sprint_id {
        after.sprint_rank = sprint_key(&mut uow, &after).await?;
    }
    match store::update(&mut uow, &after, before.version).await {
        Ok(true) => {}
        // Another writer took the row, or the rank key chosen for it (two moves into one
        // gap, two commitments at once): decide again on fresh state.
        Ok(false) | Err(AppError::AlreadyExists(_)) => return Ok(Attempt::LostRace),
        Err(other) => return Err(other),
    }
    store::record_membership(&mut uow, before, &after, after.update_time_us).await?;
    let mut events = events::changed(before, commanded);
    let settled = events::status_changed(
        commanded,
        &after,
        StatusChangeCause::TaskHours,
        Some(after.tasks),
    );
    if commanded.placement != after.placement {
        events.push(NewEvent::of(events::subject(&after), &settled));
    }
    outbox::append_all(&mut uow, &events).await?;
    uow.commit().await?;
    Ok(Attempt::Done(after))
}

/// The sprint rank of `item` on joining its sprint: its product rank when no item of the
/// sprint holds that key (so a sprint nobody reordered reads in product backlog order),
/// else the end of the sprint. Empty outside every sprint.
async fn sprint_key(uow: &mut UnitOfWork, item: &BacklogItem) -> AppResult<String> {
    let sprint = &item.placement.sprint_id;
    if sprint.is_empty() {
        return Ok(String::new());
    }
    Ok(store::SPRINT_BACKLOG
        .key_preferring(uow.conn(), &item.tenant_id, sprint, &item.rank)
        .await?)
}

/// `use_case_id`, if any, names a use case the planning service recorded for `tenant`'s
/// product `product_id`: an unknown one, another product's or another tenant's is
/// refused alike (FAILED_PRECONDITION naming the field).
async fn check_use_case(
    uow: &mut UnitOfWork,
    tenant: &str,
    product_id: &str,
    use_case_id: &str,
) -> AppResult<()> {
    if use_case_id.is_empty() {
        return Ok(());
    }
    match store::use_case_product(uow.conn(), tenant, use_case_id).await? {
        Some(product) if product == product_id => Ok(()),
        _ => Err(AppError::precondition(format!(
            "use_case_id: use case {use_case_id} is not a use case of product {product_id}; \
             create it in the planning service first"
        ))),
    }
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
