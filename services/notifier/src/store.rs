//! The notifier's database: subscriptions, deliveries (inbox and queue in one table),
//! the sprints it watches and the feed checkpoints it advances with its inbox.

use agilepm_platform::domain::error::AppResult;
use agilepm_platform::domain::time::now_micros;
use agilepm_platform::events::feed::position::feed_order;
use agilepm_platform::storage::db::{Db, Engine};
use sqlx::any::AnyRow;
// Statements built with format! only splice in the column-list constants below (and,
// in `redeliver`, one of two fixed column names): never a value, which is always bound.
use sqlx::{AnyConnection, AssertSqlSafe, Row};

use crate::domain::{
    Delivery, Kind, Notification, SigningSecrets, State, Subscription, kinds_column,
    kinds_from_column,
};

const SUBSCRIPTION_COLUMNS: &str = "subscription_id, tenant_id, target_url, notification_types, \
     description, enabled, secret, previous_secret, previous_secret_expire_us, create_time_us, \
     update_time_us, version";

fn subscription_from(row: &AnyRow) -> Result<Subscription, sqlx::Error> {
    Ok(Subscription {
        id: row.try_get("subscription_id")?,
        tenant_id: row.try_get("tenant_id")?,
        target_url: row.try_get("target_url")?,
        kinds: kinds_from_column(&row.try_get::<String, _>("notification_types")?),
        description: row.try_get("description")?,
        enabled: row.try_get::<i64, _>("enabled")? == 1,
        secrets: SigningSecrets {
            current: row.try_get("secret")?,
            previous: row.try_get("previous_secret")?,
        },
        previous_secret_expire_us: row.try_get("previous_secret_expire_us")?,
        create_time_us: row.try_get("create_time_us")?,
        update_time_us: row.try_get("update_time_us")?,
        version: row.try_get("version")?,
    })
}

/// Stores a new subscription, taking one of its tenant's `bound` places in the same
/// transaction; false (nothing stored) when the tenant holds `bound` already.
pub async fn insert_subscription(db: &Db, s: &Subscription, bound: i64) -> AppResult<bool> {
    let mut tx = db.begin().await?;
    let took = sqlx::query(
        "INSERT INTO subscription_counts (tenant_id, subscriptions) VALUES ($1, 1) \
         ON CONFLICT (tenant_id) DO UPDATE SET subscriptions = subscription_counts.subscriptions + 1 \
         WHERE subscription_counts.subscriptions < $2",
    )
    .bind(&s.tenant_id)
    .bind(bound)
    .execute(tx.conn())
    .await?
    .rows_affected();
    if took == 0 {
        return Ok(false);
    }
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO subscriptions ({SUBSCRIPTION_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    )))
    .bind(&s.id)
    .bind(&s.tenant_id)
    .bind(&s.target_url)
    .bind(kinds_column(&s.kinds))
    .bind(&s.description)
    .bind(i64::from(s.enabled))
    .bind(&s.secrets.current)
    .bind(&s.secrets.previous)
    .bind(s.previous_secret_expire_us)
    .bind(s.create_time_us)
    .bind(s.update_time_us)
    .bind(s.version)
    .execute(tx.conn())
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Subscription `id` of `tenant_id` (any tenant's with `None`).
pub async fn get_subscription(
    db: &Db,
    tenant_id: Option<&str>,
    id: &str,
) -> AppResult<Option<Subscription>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions \
         WHERE subscription_id = $1 AND ($2 IS NULL OR tenant_id = $2)"
    )))
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.as_ref().map(subscription_from).transpose()?)
}

/// A page of `tenant_id`'s subscriptions after the one created at `after` (creation
/// time, id), oldest first.
pub async fn list_subscriptions(
    db: &Db,
    tenant_id: &str,
    after: Option<(i64, String)>,
    limit: u32,
) -> AppResult<Vec<Subscription>> {
    let (after_time, after_id) = after.unwrap_or((i64::MIN, String::new()));
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE tenant_id = $1 \
         AND (create_time_us > $2 OR (create_time_us = $2 AND subscription_id > $3)) \
         ORDER BY create_time_us, subscription_id LIMIT $4"
    )))
    .bind(tenant_id)
    .bind(after_time)
    .bind(after_id)
    .bind(i64::from(limit))
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .iter()
        .map(subscription_from)
        .collect::<Result<_, _>>()?)
}

/// Writes a changed subscription (every field but id, tenant and creation time) if it
/// is still at `read_version`, as version `s.version`; false if another writer changed
/// or deleted it since.
pub async fn update_subscription(db: &Db, s: &Subscription, read_version: i64) -> AppResult<bool> {
    Ok(sqlx::query(
        "UPDATE subscriptions SET target_url = $1, notification_types = $2, description = $3, \
         enabled = $4, secret = $5, previous_secret = $6, previous_secret_expire_us = $7, \
         update_time_us = $8, version = $9 \
         WHERE subscription_id = $10 AND tenant_id = $11 AND version = $12",
    )
    .bind(&s.target_url)
    .bind(kinds_column(&s.kinds))
    .bind(&s.description)
    .bind(i64::from(s.enabled))
    .bind(&s.secrets.current)
    .bind(&s.secrets.previous)
    .bind(s.previous_secret_expire_us)
    .bind(s.update_time_us)
    .bind(s.version)
    .bind(&s.id)
    .bind(&s.tenant_id)
    .bind(read_version)
    .execute(db.pool())
    .await?
    .rows_affected()
        == 1)
}

/// Deletes subscription `id` of `tenant_id` at `read_version` with its deliveries, and
/// gives its place back; false if another writer changed or deleted it since.
pub async fn delete_subscription(
    db: &Db,
    tenant_id: &str,
    id: &str,
    read_version: i64,
) -> AppResult<bool> {
    let mut tx = db.begin().await?;
    let deleted = sqlx::query(
        "DELETE FROM subscriptions WHERE subscription_id = $1 AND tenant_id = $2 AND version = $3",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(read_version)
    .execute(tx.conn())
    .await?
    .rows_affected();
    if deleted == 0 {
        return Ok(false);
    }
    sqlx::query("DELETE FROM deliveries WHERE subscription_id = $1 AND tenant_id = $2")
        .bind(id)
        .bind(tenant_id)
        .execute(tx.conn())
        .await?;
    sqlx::query(
        "UPDATE subscription_counts SET subscriptions = subscriptions - 1 WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .execute(tx.conn())
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// The enabled subscriptions of `tenant_id`, each with the kinds it wants.
pub async fn enabled_subscriptions(
    conn: &mut AnyConnection,
    tenant_id: &str,
) -> AppResult<Vec<(String, Vec<Kind>)>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT subscription_id, notification_types FROM subscriptions \
         WHERE tenant_id = $1 AND enabled = 1 ORDER BY subscription_id",
    )
    .bind(tenant_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, kinds)| (id, kinds_from_column(&kinds)))
        .collect())
}

/// Records `notification` for each of `subscriptions` (its tenant's enabled ones) that
/// wants its kind, once: a notification already recorded for a subscription is left as
/// it is. Returns the deliveries created.
pub async fn record(
    conn: &mut AnyConnection,
    notification: &Notification,
    subscriptions: &[(String, Vec<Kind>)],
) -> AppResult<u64> {
    let now = now_micros();
    let mut created = 0;
    for (subscription_id, kinds) in subscriptions {
        if !kinds.contains(&notification.kind) {
            continue;
        }
        created += sqlx::query(
            "INSERT INTO deliveries (delivery_id, subscription_id, tenant_id, webhook_id, \
             notification_type, payload, trace_parent, state, attempts, next_attempt_us, \
             last_error, last_http_status, occur_time_us, create_time_us, update_time_us) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, '', 0, $10, $9, $9) \
             ON CONFLICT (subscription_id, webhook_id) DO NOTHING",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(subscription_id)
        .bind(&notification.tenant_id)
        .bind(&notification.id)
        .bind(notification.kind as i64)
        .bind(&notification.payload)
        .bind(&notification.trace_parent)
        .bind(State::Pending as i64)
        .bind(now)
        .bind(notification.occur_time_us)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    }
    Ok(created)
}

/// Moves checkpoint `consumer` to `position` unless it is already at or past it (the
/// inbox and the follower both save it, and a save may finish after a later one). A
/// compare-and-set on the position read, so two transactions racing cannot move it back.
pub async fn advance_checkpoint(
    conn: &mut AnyConnection,
    consumer: &str,
    position: &str,
) -> AppResult<()> {
    loop {
        let saved: Option<String> =
            sqlx::query_scalar("SELECT position FROM feed_checkpoints WHERE consumer = $1")
                .bind(consumer)
                .fetch_optional(&mut *conn)
                .await?;
        if saved
            .as_ref()
            .is_some_and(|saved| feed_order(saved) >= feed_order(position))
        {
            return Ok(());
        }
        let moved = sqlx::query(
            "INSERT INTO feed_checkpoints (consumer, position, update_time_us) VALUES ($1, $2, $3) \
             ON CONFLICT (consumer) DO UPDATE SET position = excluded.position, \
             update_time_us = excluded.update_time_us WHERE feed_checkpoints.position = $4",
        )
        .bind(consumer)
        .bind(position)
        .bind(now_micros())
        .bind(saved.unwrap_or_default())
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if moved == 1 {
            return Ok(());
        }
    }
}

/// Starts watching a sprint (again, after a replay: its verdict is kept).
pub async fn watch_sprint(
    conn: &mut AnyConnection,
    sprint_id: &str,
    tenant_id: &str,
    product_id: &str,
) -> AppResult<()> {
    sqlx::query(
        "INSERT INTO active_sprints (sprint_id, tenant_id, product_id, at_risk, at_risk_day, \
         update_time_us) VALUES ($1, $2, $3, 0, '', $4) ON CONFLICT (sprint_id) DO NOTHING",
    )
    .bind(sprint_id)
    .bind(tenant_id)
    .bind(product_id)
    .bind(now_micros())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Stops watching a completed sprint.
pub async fn unwatch_sprint(conn: &mut AnyConnection, sprint_id: &str) -> AppResult<()> {
    sqlx::query("DELETE FROM active_sprints WHERE sprint_id = $1")
        .bind(sprint_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Raises `tenant_id`'s latest estimated day to `day` (ISO dates order as text).
pub async fn raise_tenant_day(
    conn: &mut AnyConnection,
    tenant_id: &str,
    day: &str,
) -> AppResult<()> {
    sqlx::query(
        "INSERT INTO tenant_days (tenant_id, latest_day) VALUES ($1, $2) \
         ON CONFLICT (tenant_id) DO UPDATE SET latest_day = excluded.latest_day \
         WHERE tenant_days.latest_day < excluded.latest_day",
    )
    .bind(tenant_id)
    .bind(day)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A sprint being watched, with its last verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedSprint {
    /// The sprint.
    pub sprint_id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// Its product.
    pub product_id: String,
    /// Whether it was last judged at risk.
    pub at_risk: bool,
    /// The day an at-risk notification was last recorded for (empty: never).
    pub at_risk_day: String,
    /// The latest day its tenant estimated for (empty: none yet).
    pub tenant_day: String,
}

/// The sprints watched, of `tenants` only when given.
pub async fn watched_sprints(db: &Db, tenants: Option<&[String]>) -> AppResult<Vec<WatchedSprint>> {
    let rows = sqlx::query(
        "SELECT s.sprint_id, s.tenant_id, s.product_id, s.at_risk, s.at_risk_day, \
         COALESCE(d.latest_day, '') AS tenant_day \
         FROM active_sprints s LEFT JOIN tenant_days d ON d.tenant_id = s.tenant_id \
         ORDER BY s.sprint_id",
    )
    .fetch_all(db.pool())
    .await?;
    let mut sprints = Vec::with_capacity(rows.len());
    for row in rows {
        let sprint = WatchedSprint {
            sprint_id: row.try_get("sprint_id")?,
            tenant_id: row.try_get("tenant_id")?,
            product_id: row.try_get("product_id")?,
            at_risk: row.try_get::<i64, _>("at_risk")? == 1,
            at_risk_day: row.try_get("at_risk_day")?,
            tenant_day: row.try_get("tenant_day")?,
        };
        if tenants.is_none_or(|tenants| tenants.contains(&sprint.tenant_id)) {
            sprints.push(sprint);
        }
    }
    Ok(sprints)
}

/// Records a sprint's new verdict and the notification it causes (if any), in one
/// transaction: a crash between them cannot send a notification twice or lose one.
/// Does nothing if the sprint completed meanwhile.
pub async fn judge_sprint(
    db: &Db,
    sprint_id: &str,
    at_risk: bool,
    at_risk_day: &str,
    notification: Option<&Notification>,
) -> AppResult<u64> {
    let mut tx = db.begin().await?;
    let watched = sqlx::query(
        "UPDATE active_sprints SET at_risk = $1, at_risk_day = $2, update_time_us = $3 \
         WHERE sprint_id = $4",
    )
    .bind(i64::from(at_risk))
    .bind(at_risk_day)
    .bind(now_micros())
    .bind(sprint_id)
    .execute(tx.conn())
    .await?
    .rows_affected();
    let mut created = 0;
    if watched == 1
        && let Some(notification) = notification
    {
        let subscriptions = enabled_subscriptions(tx.conn(), &notification.tenant_id).await?;
        created = record(tx.conn(), notification, &subscriptions).await?;
    }
    tx.commit().await?;
    Ok(created)
}

const DELIVERY_COLUMNS: &str = "seq, delivery_id, subscription_id, tenant_id, webhook_id, \
     notification_type, payload, trace_parent, state, attempts, next_attempt_us, last_error, \
     last_http_status, occur_time_us, create_time_us, deliver_time_us";

fn delivery_from(row: &AnyRow) -> Result<Delivery, sqlx::Error> {
    let decode = |column: &str, what: &str| sqlx::Error::ColumnDecode {
        index: column.into(),
        source: format!("unknown {what}").into(),
    };
    Ok(Delivery {
        seq: row.try_get("seq")?,
        id: row.try_get("delivery_id")?,
        subscription_id: row.try_get("subscription_id")?,
        tenant_id: row.try_get("tenant_id")?,
        webhook_id: row.try_get("webhook_id")?,
        kind: Kind::from_number(row.try_get("notification_type")?)
            .ok_or_else(|| decode("notification_type", "notification type"))?,
        payload: row.try_get("payload")?,
        trace_parent: row.try_get("trace_parent")?,
        state: State::from_number(row.try_get("state")?)
            .ok_or_else(|| decode("state", "delivery state"))?,
        attempts: row.try_get("attempts")?,
        next_attempt_us: row.try_get("next_attempt_us")?,
        last_error: row.try_get("last_error")?,
        last_http_status: row.try_get("last_http_status")?,
        occur_time_us: row.try_get("occur_time_us")?,
        create_time_us: row.try_get("create_time_us")?,
        deliver_time_us: row.try_get("deliver_time_us")?,
    })
}

/// The subscriptions with pending deliveries and enabled, with their tenants.
pub async fn subscriptions_with_pending(db: &Db) -> AppResult<Vec<(String, String)>> {
    Ok(sqlx::query_as(
        "SELECT s.subscription_id, s.tenant_id FROM subscriptions s WHERE s.enabled = 1 \
         AND EXISTS (SELECT 1 FROM deliveries d WHERE d.state = $1 \
         AND d.subscription_id = s.subscription_id)",
    )
    .bind(State::Pending as i64)
    .fetch_all(db.pool())
    .await?)
}

/// The subscription's first `limit` pending deliveries, in order.
pub async fn next_pending(db: &Db, subscription_id: &str, limit: i64) -> AppResult<Vec<Delivery>> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE state = $1 AND subscription_id = $2 \
         ORDER BY seq LIMIT $3"
    )))
    .bind(State::Pending as i64)
    .bind(subscription_id)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    Ok(rows.iter().map(delivery_from).collect::<Result<_, _>>()?)
}

/// The outcome of an attempt, to record.
#[derive(Debug, Clone)]
pub struct Attempted {
    /// Attempts made, this one included.
    pub attempts: i64,
    /// The new state.
    pub state: State,
    /// When the next attempt is due (pending only).
    pub next_attempt_us: i64,
    /// The failure, empty on success.
    pub error: String,
    /// The HTTP status (0: none).
    pub http_status: i64,
}

/// Records an attempt's outcome, unless the delivery is no longer the pending one that
/// was attempted (deleted, or redelivered meanwhile). True if recorded.
///
/// On PostgreSQL the commit does not wait for the WAL flush (`synchronous_commit = off`
/// for this transaction only): an outcome lost to a database crash within a fraction of
/// a second means the delivery is sent again with the same `webhook-id`, which a crash of
/// the notifier means anyway. Waiting for the flush cost more than the POST (a lane
/// sends one delivery per commit). Inbox rows, which must not be lost, commit normally.
pub async fn record_attempt(db: &Db, delivery: &Delivery, outcome: &Attempted) -> AppResult<bool> {
    let now = now_micros();
    let mut tx = db.begin().await?;
    if tx.engine() == Engine::Postgres {
        sqlx::query("SET LOCAL synchronous_commit TO OFF")
            .execute(tx.conn())
            .await?;
    }
    let updated = sqlx::query(
        "UPDATE deliveries SET state = $1, attempts = $2, next_attempt_us = $3, last_error = $4, \
         last_http_status = $5, deliver_time_us = $6, update_time_us = $7 \
         WHERE delivery_id = $8 AND state = $9 AND attempts = $10",
    )
    .bind(outcome.state as i64)
    .bind(outcome.attempts)
    .bind(outcome.next_attempt_us)
    .bind(&outcome.error)
    .bind(outcome.http_status)
    .bind((outcome.state == State::Delivered).then_some(now))
    .bind(now)
    .bind(&delivery.id)
    .bind(State::Pending as i64)
    .bind(delivery.attempts)
    .execute(tx.conn())
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(updated == 1)
}

/// When the oldest pending delivery was recorded, if there is one.
pub async fn oldest_pending(db: &Db) -> AppResult<Option<i64>> {
    Ok(
        sqlx::query_scalar("SELECT MIN(create_time_us) FROM deliveries WHERE state = $1")
            .bind(State::Pending as i64)
            .fetch_one(db.pool())
            .await?,
    )
}

/// What ListDeliveries asks for.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// Only this tenant's (`None`: a system operator's view of every tenant).
    pub tenant_id: Option<String>,
    /// Only this subscription's.
    pub subscription_id: Option<String>,
    /// Only in this state.
    pub state: Option<State>,
    /// Created at or after.
    pub from_us: Option<i64>,
    /// Created before.
    pub to_us: Option<i64>,
}

/// A page of deliveries, newest first, before `before` (its `seq`).
pub async fn list_deliveries(
    db: &Db,
    filter: &DeliveryFilter,
    before: Option<i64>,
    limit: u32,
) -> AppResult<Vec<Delivery>> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE ($1 IS NULL OR tenant_id = $1) \
         AND ($2 IS NULL OR subscription_id = $2) AND ($3 IS NULL OR state = $3) \
         AND ($4 IS NULL OR create_time_us >= $4) AND ($5 IS NULL OR create_time_us < $5) \
         AND ($6 IS NULL OR seq < $6) ORDER BY seq DESC LIMIT $7"
    )))
    .bind(&filter.tenant_id)
    .bind(&filter.subscription_id)
    .bind(filter.state.map(|s| s as i64))
    .bind(filter.from_us)
    .bind(filter.to_us)
    .bind(before)
    .bind(i64::from(limit))
    .fetch_all(db.pool())
    .await?;
    Ok(rows.iter().map(delivery_from).collect::<Result<_, _>>()?)
}

/// What to redeliver.
#[derive(Debug, Clone)]
pub enum Redeliver {
    /// One delivery.
    Delivery(String),
    /// Every dead letter of a subscription.
    Subscription(String),
}

/// Makes the dead letters chosen pending again with their attempts starting over; of
/// `tenant_id` only, when given. Returns how many.
pub async fn redeliver(db: &Db, tenant_id: Option<&str>, which: &Redeliver) -> AppResult<u64> {
    let (column, id) = match which {
        Redeliver::Delivery(id) => ("delivery_id", id),
        Redeliver::Subscription(id) => ("subscription_id", id),
    };
    let now = now_micros();
    Ok(sqlx::query(AssertSqlSafe(format!(
        "UPDATE deliveries SET state = $1, attempts = 0, next_attempt_us = $2, \
         update_time_us = $2 WHERE {column} = $3 AND state = $4 AND ($5 IS NULL OR tenant_id = $5)"
    )))
    .bind(State::Pending as i64)
    .bind(now)
    .bind(id)
    .bind(State::Dead as i64)
    .bind(tenant_id)
    .execute(db.pool())
    .await?
    .rows_affected())
}

/// Whether delivery `id` exists (of `tenant_id` only, when given).
pub async fn delivery_exists(db: &Db, tenant_id: Option<&str>, id: &str) -> AppResult<bool> {
    let found: Option<i64> = sqlx::query_scalar(
        "SELECT seq FROM deliveries WHERE delivery_id = $1 AND ($2 IS NULL OR tenant_id = $2)",
    )
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(db.pool())
    .await?;
    Ok(found.is_some())
}

/// Deletes up to `limit` deliveries delivered before `before_us`; returns how many.
/// Dead letters and pending deliveries stay.
pub async fn prune_delivered(db: &Db, before_us: i64, limit: i64) -> AppResult<u64> {
    Ok(sqlx::query(
        "DELETE FROM deliveries WHERE seq IN (SELECT seq FROM deliveries \
         WHERE state = $1 AND deliver_time_us < $2 ORDER BY seq LIMIT $3)",
    )
    .bind(State::Delivered as i64)
    .bind(before_us)
    .bind(limit)
    .execute(db.pool())
    .await?
    .rows_affected())
}
