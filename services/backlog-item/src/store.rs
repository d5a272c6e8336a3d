//! Persistence of backlog items, read into and written from `domain::BacklogItem`;
//! writes take the caller's [`UnitOfWork`] so the change and its events commit together.

use std::collections::HashMap;

use agilepm_platform::domain::error::AppResult;
use agilepm_platform::storage::db::{Db, Engine, UnitOfWork};
use agilepm_platform::storage::guarded_writes::GuardedWrite;
use agilepm_platform::storage::statement::{Column, RowSet, Statement};
use agilepm_platform::storage::stored;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::domain::{
    BacklogItem, BusinessPriority, ItemType, Placement, SprintMembership, Status, TaskBasis,
    TransitionMode,
};

/// The columns [`item_from`] reads.
macro_rules! item_columns {
    () => {
        "id, tenant_id, product_id, summary, story, category, type, story_points, \
         benefit, penalty, cost, risk, priority_score, use_case_id, release_id, sprint_id, \
         status, rank, derived_from_ids, awaiting_acceptance, reconciled_task_revision, \
         version, create_time_us, update_time_us, sprint_rank, task_hours, task_count"
    };
}

macro_rules! select_items {
    ($($rest:literal),*) => {
        concat!("SELECT ", item_columns!(), " FROM backlog_items ", $($rest),*)
    };
}

fn item_from(row: &AnyRow) -> Result<BacklogItem, sqlx::Error> {
    let int = |name: &str| row.try_get::<i64, _>(name).map(|v| v as i32);
    // Ratings are all set (1-9) or all zero: an unrated item stores zeros.
    let benefit = int("benefit")?;
    let derived: String = row.try_get("derived_from_ids")?;
    Ok(BacklogItem {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        product_id: row.try_get("product_id")?,
        summary: row.try_get("summary")?,
        story: row.try_get("story")?,
        category: row.try_get("category")?,
        item_type: stored::enum_value(row.try_get("type")?, "backlog_items.type")?,
        story_points: stored::enum_value(
            row.try_get("story_points")?,
            "backlog_items.story_points",
        )?,
        business_priority: (benefit > 0)
            .then(|| -> Result<_, sqlx::Error> {
                Ok(BusinessPriority {
                    benefit,
                    penalty: int("penalty")?,
                    cost: int("cost")?,
                    risk: int("risk")?,
                })
            })
            .transpose()?,
        use_case_id: row.try_get("use_case_id")?,
        placement: Placement {
            status: stored::enum_value(row.try_get("status")?, "backlog_items.status")?,
            release_id: row.try_get("release_id")?,
            sprint_id: row.try_get("sprint_id")?,
            awaiting_acceptance: row.try_get::<i64, _>("awaiting_acceptance")? != 0,
        },
        rank: row.try_get("rank")?,
        sprint_rank: row
            .try_get::<Option<String>, _>("sprint_rank")?
            .unwrap_or_default(),
        derived_from_ids: derived
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        tasks: TaskBasis {
            hours: row.try_get("task_hours")?,
            count: row.try_get("task_count")?,
            revision: row.try_get("reconciled_task_revision")?,
        },
        version: row.try_get("version")?,
        create_time_us: row.try_get("create_time_us")?,
        update_time_us: row.try_get("update_time_us")?,
    })
}

/// The item `id` of `tenant`.
pub async fn get(
    conn: &mut AnyConnection,
    tenant: &str,
    id: &str,
) -> AppResult<Option<BacklogItem>> {
    Ok(
        sqlx::query(select_items!("WHERE id = $1 AND tenant_id = $2"))
            .bind(id)
            .bind(tenant)
            .fetch_optional(conn)
            .await?
            .map(|row| item_from(&row))
            .transpose()?,
    )
}

/// The item a plan request with `request_id` created.
pub async fn by_request_id(
    conn: &mut AnyConnection,
    tenant: &str,
    request_id: &str,
) -> AppResult<Option<BacklogItem>> {
    Ok(
        sqlx::query(select_items!("WHERE tenant_id = $1 AND request_id = $2"))
            .bind(tenant)
            .bind(request_id)
            .fetch_optional(conn)
            .await?
            .map(|row| item_from(&row))
            .transpose()?,
    )
}

/// The product backlog as a ranked list.
pub static BACKLOG: agilepm_platform::storage::ranked::RankedList =
    agilepm_platform::ranked_list!("backlog_items");

/// Each sprint's items as a ranked list of their own.
pub static SPRINT_BACKLOG: agilepm_platform::storage::ranked::RankedList =
    agilepm_platform::ranked_list!("backlog_items", "sprint_id", "sprint_rank");

/// What an item stores as its sprint rank: NULL outside every sprint, so the unique
/// index on sprint keys holds only the items that are in one.
fn stored_sprint_rank(item: &BacklogItem) -> Option<&str> {
    (!item.sprint_rank.is_empty()).then_some(item.sprint_rank.as_str())
}

/// What an unrated item stores in its rating columns.
const UNRATED: BusinessPriority = BusinessPriority {
    benefit: 0,
    penalty: 0,
    cost: 0,
    risk: 0,
};

/// Inserts a new item.
pub async fn insert(uow: &mut UnitOfWork, item: &BacklogItem, request_id: &str) -> AppResult<()> {
    let priority = item.business_priority.unwrap_or(UNRATED);
    sqlx::query(
        "INSERT INTO backlog_items (id, tenant_id, product_id, request_id, summary, story, category, \
         type, story_points, benefit, penalty, cost, risk, priority_score, use_case_id, release_id, \
         sprint_id, status, rank, derived_from_ids, awaiting_acceptance, reconciled_task_revision, \
         version, create_time_us, update_time_us, sprint_rank, task_hours, task_count) VALUES ($1, $2, \
         $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, \
         $23, $24, $25, $26, $27, $28)",
    )
    .bind(&item.id)
    .bind(&item.tenant_id)
    .bind(&item.product_id)
    .bind(request_id)
    .bind(&item.summary)
    .bind(&item.story)
    .bind(&item.category)
    .bind(i64::from(item.item_type.number()))
    .bind(i64::from(item.story_points.number()))
    .bind(i64::from(priority.benefit))
    .bind(i64::from(priority.penalty))
    .bind(i64::from(priority.cost))
    .bind(i64::from(priority.risk))
    .bind(item.priority_score())
    .bind(&item.use_case_id)
    .bind(&item.placement.release_id)
    .bind(&item.placement.sprint_id)
    .bind(i64::from(item.placement.status.number()))
    .bind(&item.rank)
    .bind(item.derived_from_ids.join(","))
    .bind(i64::from(item.placement.awaiting_acceptance))
    .bind(item.tasks.revision)
    .bind(item.version)
    .bind(item.create_time_us)
    .bind(item.update_time_us)
    .bind(stored_sprint_rank(item))
    .bind(item.tasks.hours)
    .bind(item.tasks.count)
    .execute(uow.conn())
    .await?;
    Ok(())
}

/// Writes `item`'s mutable columns if its stored version is still `read_version` and its
/// reconciled revision is below `item.tasks.revision` or unchanged (so a stale
/// reconcile can never overwrite a newer one). Returns false if another writer won.
pub async fn update(
    uow: &mut UnitOfWork,
    item: &BacklogItem,
    read_version: i64,
) -> AppResult<bool> {
    let priority = item.business_priority.unwrap_or(UNRATED);
    let result = sqlx::query(
        "UPDATE backlog_items SET summary = $1, story = $2, category = $3, type = $4, \
         story_points = $5, benefit = $6, penalty = $7, cost = $8, risk = $9, priority_score = $10, \
         use_case_id = $11, release_id = $12, sprint_id = $13, status = $14, rank = $15, \
         awaiting_acceptance = $16, reconciled_task_revision = $17, version = $18, \
         update_time_us = $19, sprint_rank = $22, task_hours = $23, task_count = $24 \
         WHERE id = $20 AND version = $21 AND reconciled_task_revision <= $17",
    )
    .bind(&item.summary)
    .bind(&item.story)
    .bind(&item.category)
    .bind(i64::from(item.item_type.number()))
    .bind(i64::from(item.story_points.number()))
    .bind(i64::from(priority.benefit))
    .bind(i64::from(priority.penalty))
    .bind(i64::from(priority.cost))
    .bind(i64::from(priority.risk))
    .bind(item.priority_score())
    .bind(&item.use_case_id)
    .bind(&item.placement.release_id)
    .bind(&item.placement.sprint_id)
    .bind(i64::from(item.placement.status.number()))
    .bind(&item.rank)
    .bind(i64::from(item.placement.awaiting_acceptance))
    .bind(item.tasks.revision)
    .bind(item.version)
    .bind(item.update_time_us)
    .bind(&item.id)
    .bind(read_version)
    .bind(stored_sprint_rank(item))
    .bind(item.tasks.hours)
    .bind(item.tasks.count)
    .execute(uow.conn())
    .await?;
    Ok(result.rows_affected() == 1)
}

/// An item's placement as reconciliation leaves it, to write over the row it was read
/// from.
pub struct PlacementWrite<'a> {
    /// The item after reconciliation.
    pub item: &'a BacklogItem,
    /// Its version when read: the write's guard.
    pub read_version: i64,
}

/// Writes the columns reconciliation changes (status, release, sprint, acceptance flag,
/// the basis applied, version, update time) of every item in `writes`, guarded: each
/// must still be at its read version (so no other column changed since either) and its
/// reconciled revision at or below the new one. One statement whatever the count (rows
/// bound as arrays on PostgreSQL, so it is planned once per connection).
pub fn placements_write<'a>(writes: &'a [PlacementWrite<'a>]) -> GuardedWrite<'a> {
    GuardedWrite {
        build: Box::new(move |statement: &mut Statement| {
            let int = |value: fn(&PlacementWrite<'_>) -> i64| {
                Column::BigInt(writes.iter().map(value).collect())
            };
            let rows = RowSet(vec![
                Column::text(writes.iter().map(|w| w.item.id.as_str())),
                int(|w| w.read_version),
                int(|w| i64::from(w.item.placement.status.number())),
                Column::text(writes.iter().map(|w| w.item.placement.release_id.as_str())),
                Column::text(writes.iter().map(|w| w.item.placement.sprint_id.as_str())),
                int(|w| i64::from(w.item.placement.awaiting_acceptance)),
                int(|w| w.item.tasks.revision),
                int(|w| w.item.version),
                int(|w| w.item.update_time_us),
                int(|w| w.item.tasks.hours),
                int(|w| w.item.tasks.count),
            ]);
            statement
                .sql(
                    "UPDATE backlog_items SET status = v.column3, release_id = v.column4, \
                     sprint_id = v.column5, awaiting_acceptance = v.column6, \
                     reconciled_task_revision = v.column7, version = v.column8, \
                     update_time_us = v.column9, task_hours = v.column10, \
                     task_count = v.column11 FROM ",
                )
                .rows(rows)
                .sql(
                    " WHERE backlog_items.id = v.column1 AND backlog_items.version = v.column2 \
                     AND backlog_items.reconciled_task_revision <= v.column7",
                );
        }),
        rows: Some(writes.len() as u64),
    }
}

/// A newer task-hours basis for one item, for the reconcile fast statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevisionMove<'a> {
    /// The caller's tenant.
    pub tenant: &'a str,
    /// The item.
    pub id: &'a str,
    /// The basis: hours left (above zero), task count, the task service's revision.
    pub basis: TaskBasis,
}

/// The fast path of reconciliation, for many items in one statement: a newer basis with
/// hours remaining cannot change an item that is not DONE and not awaiting acceptance
/// (`domain::reconcile`; its test
/// `hours_left_never_change_an_item_that_is_not_done_or_awaiting` pins that), so it only
/// records the basis (moving the revision guard). `moves` name each item at most once,
/// all with hours left.
/// Returns the items it moved, by id; the others (DONE, awaiting, stale, missing, other
/// tenant) need the full path.
pub async fn advance_revisions_if_nothing_changes(
    db: &Db,
    moves: &[RevisionMove<'_>],
) -> AppResult<HashMap<String, BacklogItem>> {
    if moves.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(advance_revisions_statement(db.engine(), moves)
        .query()?
        .fetch_all(db.write_pool())
        .await?
        .iter()
        .map(|row| item_from(row).map(|item| (item.id.clone(), item)))
        .collect::<Result<_, _>>()?)
}

/// The statement of [`advance_revisions_if_nothing_changes`] for `moves` (at least one).
pub fn advance_revisions_statement(engine: Engine, moves: &[RevisionMove<'_>]) -> Statement {
    // The row set's columns are named column1..5, so the item's own column names are
    // unambiguous in RETURNING; on PostgreSQL they are bound as arrays, so the text is
    // the same whatever the batch size and is planned once per connection.
    //
    // Each item is reached through the primary key: no index of backlog_items leads with
    // tenant_id, which a plan made before the table had statistics would otherwise take
    // for `tenant_id = v.column2` (migration 0101_request_id_first).
    let rows = RowSet(vec![
        Column::text(moves.iter().map(|m| m.id)),
        Column::text(moves.iter().map(|m| m.tenant)),
        Column::BigInt(moves.iter().map(|m| m.basis.revision).collect()),
        Column::BigInt(moves.iter().map(|m| m.basis.hours).collect()),
        Column::BigInt(moves.iter().map(|m| m.basis.count).collect()),
    ]);
    let mut statement = Statement::new(engine);
    statement
        .sql(
            "UPDATE backlog_items SET reconciled_task_revision = v.column3, \
             task_hours = v.column4, task_count = v.column5 FROM ",
        )
        .rows(rows)
        .sql(concat!(
            " WHERE backlog_items.id = v.column1 AND backlog_items.tenant_id = v.column2 \
             AND backlog_items.reconciled_task_revision < v.column3 \
             AND backlog_items.status <> 4 AND backlog_items.awaiting_acceptance = 0 \
             RETURNING ",
            item_columns!()
        ));
    statement
}

/// The items `ids` (any tenant) with the transition mode recorded for each one's product
/// (none when the planning service recorded none: AUTOMATIC applies), read without a lock
/// in one query: a writer that decides on them writes with [`placements_write`]'s version
/// guard, and with [`modes_unchanged`] where the decision depended on the mode.
pub async fn read_all_with_modes(
    db: &Db,
    ids: &[&str],
) -> AppResult<Vec<(BacklogItem, Option<TransitionMode>)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut statement = Statement::new(db.engine());
    statement
        .sql(concat!(
            "SELECT ",
            item_columns!(),
            ", (SELECT status_transition_mode FROM products AS p \
               WHERE p.tenant_id = backlog_items.tenant_id \
                 AND p.product_id = backlog_items.product_id) AS product_mode \
             FROM backlog_items WHERE "
        ))
        .any_of("id", ids);
    statement
        .query()?
        .fetch_all(db.pool())
        .await?
        .iter()
        .map(|row| {
            let mode: Option<i64> = row.try_get("product_mode")?;
            let mode = mode
                .map(|m| stored::enum_value(m, "products.status_transition_mode"))
                .transpose()?;
            Ok((item_from(row)?, mode))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// A product's transition mode as a decision read it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModeRead {
    /// The product's tenant.
    pub tenant: String,
    /// The product.
    pub product_id: String,
    /// The mode read.
    pub mode: TransitionMode,
}

/// A guard that every product of `reads` still has the mode read. It is a write (a
/// no-op update of each product's row), not a read, on purpose: on PostgreSQL it locks
/// the row until the decision commits, so a mode switch ([`record_products`]) either
/// commits first (then this touches fewer rows, and the decision is taken again on the
/// new mode) or waits for the decision and then sees the item it flagged or finished.
pub fn modes_unchanged(reads: &[ModeRead]) -> GuardedWrite<'_> {
    GuardedWrite {
        build: Box::new(move |statement: &mut Statement| {
            let rows = RowSet(vec![
                Column::text(reads.iter().map(|r| r.tenant.as_str())),
                Column::text(reads.iter().map(|r| r.product_id.as_str())),
                Column::BigInt(reads.iter().map(|r| i64::from(r.mode.number())).collect()),
            ]);
            statement
                .sql("UPDATE products SET product_version = products.product_version FROM ")
                .rows(rows)
                .sql(
                    " WHERE products.tenant_id = v.column1 AND products.product_id = v.column2 \
                     AND products.status_transition_mode = v.column3",
                );
        }),
        rows: Some(reads.len() as u64),
    }
}

/// The COMMITTED items of `tenant`'s `products` that await acceptance, where the product
/// is recorded in AUTOMATIC mode: those a switch from MANUAL releases. On PostgreSQL the
/// rows are locked, so a reconcile flagging an item of these products at the same moment
/// either commits first (and is seen here) or waits for this transaction.
pub async fn awaiting_in_automatic_products(
    uow: &mut UnitOfWork,
    tenant: &str,
    products: &[&str],
) -> AppResult<Vec<BacklogItem>> {
    if products.is_empty() {
        return Ok(Vec::new());
    }
    let engine = uow.engine();
    let mut statement = Statement::new(engine);
    statement
        .sql(concat!(
            "SELECT ",
            item_columns!(),
            " FROM backlog_items WHERE backlog_items.awaiting_acceptance = 1 \
             AND backlog_items.status = 3 AND backlog_items.tenant_id = "
        ))
        .placeholder()
        .bind(tenant.to_owned());
    statement.sql(
        " AND EXISTS (SELECT 1 FROM products AS p WHERE p.tenant_id = backlog_items.tenant_id \
         AND p.product_id = backlog_items.product_id AND p.status_transition_mode = 1) AND ",
    );
    statement.any_of("backlog_items.product_id", products);
    if engine == Engine::Postgres {
        statement.sql(" FOR UPDATE OF backlog_items");
    }
    statement
        .query()?
        .fetch_all(uow.conn())
        .await?
        .iter()
        .map(item_from)
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// The transition mode recorded for `tenant`'s `product_id` (AUTOMATIC when none is).
pub async fn mode_of(
    conn: &mut AnyConnection,
    tenant: &str,
    product_id: &str,
) -> AppResult<TransitionMode> {
    let mode: Option<i64> = sqlx::query_scalar(
        "SELECT status_transition_mode FROM products WHERE tenant_id = $1 AND product_id = $2",
    )
    .bind(tenant.to_owned())
    .bind(product_id.to_owned())
    .fetch_optional(conn)
    .await?;
    Ok(mode
        .map(|m| stored::enum_value(m, "products.status_transition_mode"))
        .transpose()?
        .unwrap_or(TransitionMode::Automatic))
}

/// Records `facts` about `tenant`'s products in one statement, each unless a newer
/// version is recorded (an equal one is rewritten, so a fact recorded for a change the
/// planning service then failed to commit is replaced by the one it did commit). Returns
/// how many were applied. Of several facts about one product, the newest is recorded
/// (one statement may not change a row twice).
pub async fn record_products(
    uow: &mut UnitOfWork,
    tenant: &str,
    facts: &[(String, TransitionMode, i64)],
) -> AppResult<u64> {
    let mut newest: HashMap<&str, (TransitionMode, i64)> = HashMap::new();
    for (product_id, mode, version) in facts {
        let kept = newest.entry(product_id).or_insert((*mode, *version));
        if *version >= kept.1 {
            *kept = (*mode, *version);
        }
    }
    if newest.is_empty() {
        return Ok(0);
    }
    let newest: Vec<(&str, (TransitionMode, i64))> = newest.into_iter().collect();
    let rows = RowSet(vec![
        Column::text(newest.iter().map(|_| tenant)),
        Column::text(newest.iter().map(|(id, _)| *id)),
        Column::BigInt(
            newest
                .iter()
                .map(|(_, (mode, _))| i64::from(mode.number()))
                .collect(),
        ),
        Column::BigInt(newest.iter().map(|(_, (_, version))| *version).collect()),
    ]);
    let mut statement = Statement::new(uow.engine());
    statement
        .sql(
            "INSERT INTO products (tenant_id, product_id, status_transition_mode, \
             product_version) SELECT * FROM ",
        )
        .rows(rows)
        .sql(
            " WHERE true ON CONFLICT (tenant_id, product_id) DO UPDATE \
             SET status_transition_mode = excluded.status_transition_mode, \
                 product_version = excluded.product_version \
             WHERE products.product_version <= excluded.product_version",
        );
    Ok(statement
        .query()?
        .execute(uow.conn())
        .await?
        .rows_affected())
}

/// Records `facts` about `tenant`'s use cases (id, product, version) in one statement,
/// each unless a newer version is recorded. Returns how many were applied.
pub async fn record_use_cases(
    db: &Db,
    tenant: &str,
    facts: &[(String, String, i64)],
) -> AppResult<u64> {
    let mut newest: HashMap<&str, (&str, i64)> = HashMap::new();
    for (use_case, product, version) in facts {
        let kept = newest.entry(use_case).or_insert((product, *version));
        if *version >= kept.1 {
            *kept = (product, *version);
        }
    }
    let newest: Vec<(&str, (&str, i64))> = newest.into_iter().collect();
    let rows = RowSet(vec![
        Column::text(newest.iter().map(|_| tenant)),
        Column::text(newest.iter().map(|(id, _)| *id)),
        Column::text(newest.iter().map(|(_, (product, _))| *product)),
        Column::BigInt(newest.iter().map(|(_, (_, version))| *version).collect()),
    ]);
    let mut statement = Statement::new(db.engine());
    statement
        .sql("INSERT INTO use_cases (tenant_id, use_case_id, product_id, use_case_version) SELECT * FROM ")
        .rows(rows)
        .sql(
            " WHERE true ON CONFLICT (tenant_id, use_case_id) DO UPDATE \
             SET product_id = excluded.product_id, use_case_version = excluded.use_case_version \
             WHERE use_cases.use_case_version <= excluded.use_case_version",
        );
    Ok(statement
        .query()?
        .execute(db.write_pool())
        .await?
        .rows_affected())
}

/// The product of use case `use_case_id` as the planning service recorded it for
/// `tenant`, if it did.
pub async fn use_case_product(
    conn: &mut AnyConnection,
    tenant: &str,
    use_case_id: &str,
) -> AppResult<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT product_id FROM use_cases WHERE tenant_id = $1 AND use_case_id = $2",
    )
    .bind(tenant.to_owned())
    .bind(use_case_id.to_owned())
    .fetch_optional(conn)
    .await?)
}

/// Whether the planning service recorded `product_id` for `tenant`.
pub async fn product_exists(
    conn: &mut AnyConnection,
    tenant: &str,
    product_id: &str,
) -> AppResult<bool> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM products WHERE tenant_id = $1 AND product_id = $2")
            .bind(tenant.to_owned())
            .bind(product_id.to_owned())
            .fetch_optional(conn)
            .await?;
    Ok(found.is_some())
}

/// How many of `ids` are items of `tenant`.
pub async fn count_of_tenant(
    conn: &mut AnyConnection,
    engine: Engine,
    tenant: &str,
    ids: &[&str],
) -> AppResult<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    let mut statement = Statement::new(engine);
    statement
        .sql("SELECT count(*) AS n FROM backlog_items WHERE tenant_id = ")
        .placeholder()
        .bind(tenant.to_owned())
        .sql(" AND ")
        .any_of("id", ids);
    let row = statement.query()?.fetch_one(conn).await?;
    let n: i64 = row.try_get("n")?;
    Ok(n as usize)
}

/// Filters and order of a backlog listing.
#[derive(Debug, Default)]
pub struct ListQuery {
    /// Tenant.
    pub tenant: String,
    /// Product.
    pub product_id: String,
    /// Statuses (empty: all).
    pub statuses: Vec<Status>,
    /// Release filter (empty: any).
    pub release_id: String,
    /// Sprint filter (empty: any).
    pub sprint_id: String,
    /// Use case filter (empty: any).
    pub use_case_id: String,
    /// Type filter (none: any).
    pub item_type: Option<ItemType>,
    /// The order of the rows.
    pub order: ListOrder,
    /// Keyset: the last row of the previous page as (priority score, rank), or (0, sprint
    /// rank) in sprint order.
    pub after: Option<(f64, String)>,
    /// Page size.
    pub limit: u32,
}

/// How a listing orders a product backlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListOrder {
    /// Backlog order (`rank`).
    #[default]
    Rank,
    /// Highest priority score first, then backlog order.
    PriorityScore,
    /// One sprint's own order (`sprint_rank`); the query names the sprint.
    SprintRank,
}

impl ListOrder {
    /// The `order_by` value that asks for it.
    pub fn as_str(self) -> &'static str {
        match self {
            ListOrder::Rank => "rank",
            ListOrder::PriorityScore => "priority_score desc",
            ListOrder::SprintRank => "sprint_rank",
        }
    }
}

/// One page of a product backlog.
pub async fn list(db: &Db, query: &ListQuery) -> AppResult<Vec<BacklogItem>> {
    // Filters are fixed SQL with "empty means any" parameters, so the statement text never
    // depends on input; the wanted statuses travel as a bit mask ($7).
    let status_mask = query
        .statuses
        .iter()
        .fold(0i64, |mask, status| mask | (1i64 << status.number()));
    let (has_after, after_score, after_rank) = match &query.after {
        Some((score, rank)) => (1i64, *score, rank.clone()),
        None => (0i64, 0.0, String::new()),
    };
    let filtered = |sql| {
        sqlx::query(sql)
            .bind(&query.tenant)
            .bind(&query.product_id)
            .bind(&query.release_id)
            .bind(&query.sprint_id)
            .bind(&query.use_case_id)
            .bind(query.item_type.map_or(0, |t| i64::from(t.number())))
            .bind(status_mask)
            .bind(has_after)
            .bind(after_rank.clone())
            .bind(i64::from(query.limit))
    };
    let rows = match query.order {
        ListOrder::PriorityScore => filtered(select_items!(
            "WHERE tenant_id = $1 AND product_id = $2 AND ($3 = '' OR release_id = $3) ",
            "AND ($4 = '' OR sprint_id = $4) AND ($5 = '' OR use_case_id = $5) AND ($6 = 0 OR type = $6) ",
            "AND ($7 = 0 OR ((CAST(1 AS BIGINT) << CAST(status AS INTEGER)) & $7) <> 0) ",
            "AND ($8 = 0 OR priority_score < $11 OR (priority_score = $11 AND rank > $9)) ",
            "ORDER BY priority_score DESC, rank LIMIT $10"
        ))
        .bind(after_score)
        .fetch_all(db.pool())
        .await?,
        // The sprint is named ($4 is not empty): its items all hold a sprint rank.
        ListOrder::SprintRank => filtered(select_items!(
            "WHERE tenant_id = $1 AND product_id = $2 AND ($3 = '' OR release_id = $3) ",
            "AND sprint_id = $4 AND ($5 = '' OR use_case_id = $5) AND ($6 = 0 OR type = $6) ",
            "AND ($7 = 0 OR ((CAST(1 AS BIGINT) << CAST(status AS INTEGER)) & $7) <> 0) ",
            "AND ($8 = 0 OR sprint_rank > $9) ",
            "ORDER BY sprint_rank LIMIT $10"
        ))
        .fetch_all(db.pool())
        .await?,
        ListOrder::Rank => filtered(select_items!(
            "WHERE tenant_id = $1 AND product_id = $2 AND ($3 = '' OR release_id = $3) ",
            "AND ($4 = '' OR sprint_id = $4) AND ($5 = '' OR use_case_id = $5) AND ($6 = 0 OR type = $6) ",
            "AND ($7 = 0 OR ((CAST(1 AS BIGINT) << CAST(status AS INTEGER)) & $7) <> 0) ",
            "AND ($8 = 0 OR rank > $9) ",
            "ORDER BY rank LIMIT $10"
        ))
        .fetch_all(db.pool())
        .await?,
    };
    Ok(rows.iter().map(item_from).collect::<Result<_, _>>()?)
}

/// The sprint `item` counts in for the burndown: its sprint, unless it is REMOVED.
fn member_of(item: &BacklogItem) -> &str {
    if item.placement.status == Status::Removed {
        ""
    } else {
        &item.placement.sprint_id
    }
}

/// Records a change of the sprint an item counts in (`before` -> `after`) at `now`:
/// closes its open membership and opens one in the new sprint. Run it in the change's
/// transaction.
pub async fn record_membership(
    uow: &mut UnitOfWork,
    before: &BacklogItem,
    after: &BacklogItem,
    now: i64,
) -> AppResult<()> {
    let (from, to) = (member_of(before), member_of(after));
    if from == to {
        return Ok(());
    }
    if !from.is_empty() {
        sqlx::query(
            "UPDATE sprint_memberships SET leave_time_us = $1 WHERE backlog_item_id = $2 \
             AND tenant_id = $3 AND sprint_id = $4 AND leave_time_us IS NULL",
        )
        .bind(now)
        .bind(&after.id)
        .bind(&after.tenant_id)
        .bind(from)
        .execute(uow.conn())
        .await?;
    }
    if !to.is_empty() {
        sqlx::query(
            "INSERT INTO sprint_memberships (tenant_id, sprint_id, backlog_item_id, commit_time_us, leave_time_us) \
             VALUES ($1, $2, $3, $4, NULL)",
        )
        .bind(&after.tenant_id)
        .bind(to)
        .bind(&after.id)
        .bind(now)
        .execute(uow.conn())
        .await?;
    }
    Ok(())
}

/// Up to `limit` memberships of `tenant`'s sprint `sprint_id` after `after` (commit time
/// and item id), oldest commitment first.
pub async fn sprint_memberships(
    db: &Db,
    tenant: &str,
    sprint_id: &str,
    after: Option<(i64, String)>,
    limit: u32,
) -> AppResult<Vec<SprintMembership>> {
    let (after_time, after_id) = after.unwrap_or((i64::MIN, String::new()));
    sqlx::query(
        "SELECT backlog_item_id, commit_time_us, leave_time_us FROM sprint_memberships \
         WHERE tenant_id = $1 AND sprint_id = $2 \
         AND (commit_time_us > $3 OR (commit_time_us = $3 AND backlog_item_id > $4)) \
         ORDER BY commit_time_us, backlog_item_id LIMIT $5",
    )
    .bind(tenant)
    .bind(sprint_id)
    .bind(after_time)
    .bind(after_id)
    .bind(i64::from(limit))
    .fetch_all(db.pool())
    .await?
    .iter()
    .map(|row| {
        Ok(SprintMembership {
            backlog_item_id: row.try_get("backlog_item_id")?,
            commit_time_us: row.try_get("commit_time_us")?,
            leave_time_us: row.try_get("leave_time_us")?,
        })
    })
    .collect()
}
