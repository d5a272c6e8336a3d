//! The coordinator's rules, free of I/O and of protobuf: how a batch of task events
//! becomes one basis per backlog item, what a poison event records, and the timings of
//! the lease and of health.

use std::collections::HashMap;
use std::time::Duration;

/// The lease's name: one feed, one active follower.
pub const TASK_FEED_LEASE: &str = "task-feed";
/// How long a lease lasts without renewal, unless configured
/// (`AGILEPM_LEASE_TTL_MS`): how long a killed leaseholder's work waits for a standby.
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// Shortest and longest lease a deployment may configure.
pub const LEASE_TTL_BOUNDS: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(600));

/// How often the holder of a lease lasting `ttl` renews it (and a standby tries to
/// acquire it): five times per term, so a slow renewal or two does not lose it.
pub fn lease_renewal(ttl: Duration) -> Duration {
    ttl / 5
}
/// How long following may fail before the coordinator reports itself unhealthy.
pub const UNHEALTHY_AFTER_US: i64 = 10_000_000;

/// A backlog item's task totals as the task service committed them: the basis its
/// status is reconciled from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Summed remaining hours of its tasks.
    pub hours: i64,
    /// Number of its tasks.
    pub count: i64,
    /// The task service's revision of these totals; zero if it never had tasks.
    pub revision: i64,
}

/// A followed task event, as far as reconciling goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowedEvent {
    /// Its id.
    pub event_id: String,
    /// Its feed position.
    pub position: String,
    /// The tenant.
    pub tenant: String,
    /// The backlog item whose totals it changed.
    pub backlog_item_id: String,
    /// The item's totals right after it, if the event carries them.
    pub totals: Option<Totals>,
}

/// One backlog item's share of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemWork {
    /// The tenant.
    pub tenant: String,
    /// The item.
    pub backlog_item_id: String,
    /// Its events in the batch: (event id, position).
    pub events: Vec<(String, String)>,
    /// The newest totals the events carry (highest revision). Any committed totals are
    /// a valid basis, and the newest of the batch is what a fresh read would return
    /// unless a later change is already on its way down the feed; the revision guard
    /// makes either order safe.
    pub totals: Option<Totals>,
    /// Some event came without totals: read them from the task service instead.
    pub read_totals: bool,
}

/// Collapses `events` per (tenant, item), in the order items first appear: twelve
/// estimates of one item become one reconcile.
pub fn collapse(events: impl IntoIterator<Item = FollowedEvent>) -> Vec<ItemWork> {
    let mut order = Vec::new();
    let mut items: HashMap<(String, String), ItemWork> = HashMap::new();
    for event in events {
        let key = (event.tenant.clone(), event.backlog_item_id.clone());
        let work = items.entry(key.clone()).or_insert_with(|| {
            order.push(key);
            ItemWork {
                tenant: event.tenant.clone(),
                backlog_item_id: event.backlog_item_id.clone(),
                events: Vec::new(),
                totals: None,
                read_totals: false,
            }
        });
        work.events.push((event.event_id, event.position));
        match event.totals {
            Some(totals) if work.totals.is_none_or(|t| t.revision < totals.revision) => {
                work.totals = Some(totals)
            }
            Some(_) => {}
            None => work.read_totals = true,
        }
    }
    order
        .into_iter()
        .filter_map(|key| items.remove(&key))
        .collect()
}

/// How a failed reconcile is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The item's own fault, and it can never succeed as it is (the item is missing, or
    /// the event malformed): the item is parked, every other item flows on.
    Permanent,
    /// A peer down or slow: retried with backoff, the feed position holds.
    Transient,
    /// A peer refusing or failing the coordinator's calls for every item alike (its
    /// identity refused, an internal error): a fault of the deployment, not of the item.
    /// Retried with backoff like a transient one, never parked (parking every item would
    /// make the operator retry them all once the deployment is fixed), and readiness
    /// names it.
    Configuration,
}

/// What a peer's answer `code` means for the item it was about.
pub fn failure_kind(code: tonic::Code) -> FailureKind {
    use tonic::Code;
    match code {
        Code::NotFound | Code::InvalidArgument => FailureKind::Permanent,
        // UNIMPLEMENTED is a peer older than this coordinator (mid-upgrade); CANCELLED a
        // call cut short by a restart.
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Cancelled
        | Code::Unimplemented => FailureKind::Transient,
        _ => FailureKind::Configuration,
    }
}

/// A parked backlog item as operators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedItem {
    /// The tenant.
    pub tenant_id: String,
    /// The item.
    pub backlog_item_id: String,
    /// The failure that parked it (or the last retry's).
    pub error: String,
    /// Its parked events.
    pub events: i64,
    /// When it was parked (µs).
    pub park_time_us: i64,
}

/// A task event of a parked item: the one whose reconcile failed permanently, or one
/// that arrived behind it. Skipping silently would leave the item's status wrong, so it
/// waits for an operator; other items do not wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoisonEvent {
    /// The event.
    pub event_id: String,
    /// Its feed position.
    pub position: String,
    /// The item it was about.
    pub backlog_item_id: String,
    /// The tenant.
    pub tenant_id: String,
    /// Why it failed.
    pub error: String,
    /// When it was recorded (µs).
    pub record_time_us: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, tenant: &str, item: &str, totals: Option<(i64, i64)>) -> FollowedEvent {
        FollowedEvent {
            event_id: id.into(),
            position: format!("p-{id}"),
            tenant: tenant.into(),
            backlog_item_id: item.into(),
            totals: totals.map(|(hours, revision)| Totals {
                hours,
                count: 1,
                revision,
            }),
        }
    }

    #[test]
    fn a_batch_collapses_to_the_newest_basis_per_item_in_first_seen_order() {
        let works = collapse([
            event("1", "t", "b", Some((5, 2))),
            event("2", "t", "a", Some((3, 7))),
            event("3", "t", "b", Some((4, 4))),
            event("4", "t", "b", Some((9, 3))),
        ]);
        let items: Vec<&str> = works.iter().map(|w| w.backlog_item_id.as_str()).collect();
        assert_eq!(items, ["b", "a"]);
        assert_eq!(
            works[0].totals.unwrap().revision,
            4,
            "the highest revision wins"
        );
        assert_eq!(works[0].events.len(), 3);
        assert!(!works[0].read_totals);
    }

    #[test]
    fn only_what_the_item_cannot_fix_parks_it() {
        use tonic::Code;
        assert_eq!(failure_kind(Code::NotFound), FailureKind::Permanent);
        assert_eq!(failure_kind(Code::InvalidArgument), FailureKind::Permanent);
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Unimplemented,
        ] {
            assert_eq!(failure_kind(code), FailureKind::Transient, "{code:?}");
        }
        for code in [
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::Internal,
            Code::FailedPrecondition,
            Code::Unknown,
        ] {
            assert_eq!(failure_kind(code), FailureKind::Configuration, "{code:?}");
        }
    }

    #[test]
    fn a_lease_is_renewed_five_times_per_term() {
        assert_eq!(lease_renewal(LEASE_TTL), Duration::from_secs(2));
        assert_eq!(
            lease_renewal(Duration::from_secs(1)),
            Duration::from_millis(200)
        );
    }

    #[test]
    fn the_same_item_id_in_two_tenants_is_two_items() {
        let works = collapse([
            event("1", "t1", "a", Some((1, 1))),
            event("2", "t2", "a", None),
        ]);
        assert_eq!(works.len(), 2);
        assert!(
            works[1].read_totals,
            "an event without totals asks for a read"
        );
    }
}
