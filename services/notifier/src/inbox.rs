//! The transactional inbox: a followed feed's batch becomes deliveries, sprint facts and
//! a new checkpoint in one transaction of the notifier's database.
//!
//! A delivery's key is (subscription, event id), so a replayed batch (after a crash, or
//! a checkpoint save lost to one) records nothing twice; and because the checkpoint moves
//! in the same transaction, a batch whose deliveries committed is not replayed at all in
//! the common case. The follower also saves the checkpoint on its own (for heartbeats
//! past filtered-out events); both only ever move it forward.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::NaiveDate;

use agilepm_platform::events::follower::{BatchHandler, CheckpointStore};
use agilepm_platform::storage::db::Db;
use agilepm_proto::events::v1::Event;
use tokio::sync::Notify;

use crate::domain::Kind;
use crate::events::{Effect, Source, effects};
use crate::meters::Meters;
use crate::sprint_health::DirtyTenants;
use crate::store;

/// Records one feed's events.
pub struct Inbox {
    db: Db,
    source: Source,
    /// Woken after a commit that created deliveries.
    deliveries_waiting: Arc<Notify>,
    /// Tenants whose sprints' health may have changed.
    dirty: DirtyTenants,
    meters: Arc<Meters>,
}

impl Inbox {
    /// The inbox of `source` in `db`.
    pub fn new(
        db: Db,
        source: Source,
        deliveries_waiting: Arc<Notify>,
        dirty: DirtyTenants,
        meters: Arc<Meters>,
    ) -> Inbox {
        Inbox {
            db,
            source,
            deliveries_waiting,
            dirty,
            meters,
        }
    }
}

impl BatchHandler for Inbox {
    async fn handle(&self, batch: &[Event]) -> anyhow::Result<()> {
        let Some(last) = batch.last() else {
            return Ok(());
        };
        let mut tx = self.db.begin().await?;
        let mut created = 0;
        let mut estimated = Vec::new();
        // The latest day estimated per tenant in this batch: one write per tenant, not
        // one per estimate (the task feed is mostly estimates).
        let mut latest_days: HashMap<String, NaiveDate> = HashMap::new();
        // Each tenant's enabled subscriptions, read once per batch.
        let mut subscriptions_of: HashMap<String, Vec<(String, Vec<Kind>)>> = HashMap::new();
        for event in batch {
            for effect in effects(event) {
                match effect {
                    Effect::Notify(notification) => {
                        let tenant = &notification.tenant_id;
                        if !subscriptions_of.contains_key(tenant) {
                            let enabled = store::enabled_subscriptions(tx.conn(), tenant).await?;
                            subscriptions_of.insert(tenant.clone(), enabled);
                        }
                        let subscriptions = &subscriptions_of[tenant];
                        created += store::record(tx.conn(), &notification, subscriptions).await?;
                    }
                    Effect::SprintStarted {
                        sprint_id,
                        tenant_id,
                        product_id,
                    } => {
                        store::watch_sprint(tx.conn(), &sprint_id, &tenant_id, &product_id).await?;
                        estimated.push(tenant_id);
                    }
                    Effect::SprintCompleted { sprint_id } => {
                        store::unwatch_sprint(tx.conn(), &sprint_id).await?;
                    }
                    Effect::Estimated { tenant_id, day } => {
                        let latest = latest_days.entry(tenant_id).or_insert(day);
                        *latest = (*latest).max(day);
                    }
                }
            }
        }
        for (tenant_id, day) in latest_days {
            store::raise_tenant_day(tx.conn(), &tenant_id, &day.to_string()).await?;
            estimated.push(tenant_id);
        }
        store::advance_checkpoint(tx.conn(), self.source.checkpoint(), &last.position).await?;
        tx.commit().await?;
        self.meters.recorded(created);
        if created > 0 {
            self.deliveries_waiting.notify_one();
        }
        self.dirty.mark(estimated);
        Ok(())
    }
}

/// The checkpoint of one followed feed, moved only forward (see the module comment).
pub struct InboxCheckpoint {
    db: Db,
    source: Source,
}

impl InboxCheckpoint {
    /// The checkpoint of `source` in `db`.
    pub fn new(db: Db, source: Source) -> InboxCheckpoint {
        InboxCheckpoint { db, source }
    }
}

impl CheckpointStore for InboxCheckpoint {
    async fn load(&self) -> anyhow::Result<String> {
        let position: Option<String> =
            sqlx::query_scalar("SELECT position FROM feed_checkpoints WHERE consumer = $1")
                .bind(self.source.checkpoint())
                .fetch_optional(self.db.pool())
                .await?;
        Ok(position.unwrap_or_default())
    }

    async fn save(&self, position: &str) -> anyhow::Result<()> {
        let mut tx = self.db.begin().await?;
        store::advance_checkpoint(tx.conn(), self.source.checkpoint(), position).await?;
        tx.commit().await?;
        Ok(())
    }
}
