//! The notifier's vocabulary, free of I/O and of protobuf: kinds of notification, a
//! notification, a subscription, a delivery and its states, and the retry schedule.

use std::time::Duration;

use rand::Rng as _;

/// What a subscription can be told about (the `NotificationType` numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A backlog item became DONE.
    BacklogItemDone = 1,
    /// A DONE backlog item is no longer DONE.
    BacklogItemRegressed = 2,
    /// A sprint started.
    SprintStarted = 3,
    /// A sprint completed.
    SprintCompleted = 4,
    /// An active sprint is behind its ideal line by more than the margin.
    SprintAtRisk = 5,
    /// A sprint at risk is within the margin again.
    SprintBackOnTrack = 6,
    /// A task became IMPEDED.
    TaskImpeded = 7,
}

impl Kind {
    /// Every kind, in number order.
    pub const ALL: [Kind; 7] = [
        Kind::BacklogItemDone,
        Kind::BacklogItemRegressed,
        Kind::SprintStarted,
        Kind::SprintCompleted,
        Kind::SprintAtRisk,
        Kind::SprintBackOnTrack,
        Kind::TaskImpeded,
    ];

    /// The kind numbered `number`, if any.
    pub fn from_number(number: i64) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| *k as i64 == number)
    }

    /// The `type` field of the JSON body, as receivers route on it.
    pub fn webhook_type(self) -> &'static str {
        match self {
            Kind::BacklogItemDone => "backlog_item.done",
            Kind::BacklogItemRegressed => "backlog_item.regressed",
            Kind::SprintStarted => "sprint.started",
            Kind::SprintCompleted => "sprint.completed",
            Kind::SprintAtRisk => "sprint.at_risk",
            Kind::SprintBackOnTrack => "sprint.back_on_track",
            Kind::TaskImpeded => "task.impeded",
        }
    }
}

/// Kinds as stored: their numbers, comma-separated.
pub fn kinds_column(kinds: &[Kind]) -> String {
    kinds
        .iter()
        .map(|k| (*k as i64).to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Kinds from their stored column (unknown numbers are skipped).
pub fn kinds_from_column(column: &str) -> Vec<Kind> {
    column
        .split(',')
        .filter_map(|n| n.parse().ok().and_then(Kind::from_number))
        .collect()
}

/// Something to tell a tenant: one webhook message, sent to each subscription that wants
/// its kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// The `webhook-id`: the causing event's id, or a name derived from what it is about
    /// (sprint health), so recording it again is recognised as the same notification.
    pub id: String,
    /// Tenant told.
    pub tenant_id: String,
    /// What it tells.
    pub kind: Kind,
    /// The JSON body.
    pub payload: String,
    /// The W3C traceparent of the request that caused it (empty: none).
    pub trace_parent: String,
    /// When what it tells happened.
    pub occur_time_us: i64,
}

/// An endpoint subscribed to notifications.
#[derive(Clone, PartialEq)]
pub struct Subscription {
    /// Id.
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Where deliveries go.
    pub target_url: String,
    /// What it wants.
    pub kinds: Vec<Kind>,
    /// For people.
    pub description: String,
    /// Whether deliveries are made.
    pub enabled: bool,
    /// The signing secrets: the current one, then the previous one while it overlaps.
    pub secrets: SigningSecrets,
    /// Until when the previous secret signs.
    pub previous_secret_expire_us: Option<i64>,
    /// Created.
    pub create_time_us: i64,
    /// Last changed.
    pub update_time_us: i64,
    /// Optimistic concurrency version: 1 when created, one more on every change.
    pub version: i64,
}

/// Secrets never reach a log: a subscription prints without them.
impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("tenant_id", &self.tenant_id)
            .field("target_url", &self.target_url)
            .field("kinds", &self.kinds)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// The secrets a delivery is signed with.
#[derive(Clone, PartialEq, Default)]
pub struct SigningSecrets {
    /// The current secret (`whsec_...`).
    pub current: String,
    /// The previous one, while its overlap runs.
    pub previous: Option<String>,
}

impl SigningSecrets {
    /// The secrets valid at `now_us`, current first.
    pub fn valid_at(&self, expire_us: Option<i64>, now_us: i64) -> Vec<&str> {
        let mut secrets = vec![self.current.as_str()];
        if let (Some(previous), Some(expire)) = (&self.previous, expire_us)
            && now_us < expire
        {
            secrets.push(previous);
        }
        secrets
    }
}

/// Where a delivery stands (the `DeliveryState` numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Attempts go on.
    Pending = 1,
    /// The endpoint answered 2xx.
    Delivered = 2,
    /// Every attempt failed.
    Dead = 3,
}

impl State {
    /// The state numbered `number`.
    pub fn from_number(number: i64) -> Option<State> {
        [State::Pending, State::Delivered, State::Dead]
            .into_iter()
            .find(|s| *s as i64 == number)
    }
}

/// One notification to one subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Order among the subscription's deliveries.
    pub seq: i64,
    /// Id.
    pub id: String,
    /// The subscription.
    pub subscription_id: String,
    /// Tenant.
    pub tenant_id: String,
    /// The notification's id, sent as `webhook-id`.
    pub webhook_id: String,
    /// What it tells.
    pub kind: Kind,
    /// The JSON body.
    pub payload: String,
    /// The causing request's traceparent.
    pub trace_parent: String,
    /// Where it stands.
    pub state: State,
    /// Attempts made.
    pub attempts: i64,
    /// When the next attempt is due.
    pub next_attempt_us: i64,
    /// The last failure.
    pub last_error: String,
    /// The last HTTP status (0: none).
    pub last_http_status: i64,
    /// When what it tells happened.
    pub occur_time_us: i64,
    /// Recorded.
    pub create_time_us: i64,
    /// Delivered.
    pub deliver_time_us: Option<i64>,
}

/// How deliveries are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts before a delivery is dead-lettered.
    pub max_attempts: i64,
    /// Delay after the first failure; doubles per failure up to `max_delay`.
    pub first_delay: Duration,
    /// Longest delay between attempts.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 8 attempts over about 20 minutes: 5 s, 10 s, 20 s, 40 s, 80 s, 160 s, 320 s
    /// (±20 % each): long enough to ride out a receiver's deploy or restart, short
    /// enough that a dead endpoint is in the dead-letter queue the same hour.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            first_delay: Duration::from_secs(5),
            max_delay: Duration::from_secs(15 * 60),
        }
    }
}

impl RetryPolicy {
    /// The delay before the attempt after `failures` failed ones: exponential, with
    /// ±20 % jitter so that the deliveries of an endpoint that came back do not all
    /// retry in the same instant.
    pub fn delay_after(&self, failures: i64) -> Duration {
        let exponent = u32::try_from(failures.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
        let base = self
            .first_delay
            .saturating_mul(1 << exponent)
            .min(self.max_delay);
        base.mul_f64(rand::rng().random_range(0.8..=1.2))
    }
}

/// The most subscriptions one tenant may hold.
pub const MAX_SUBSCRIPTIONS_PER_TENANT: i64 = 25;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_column() {
        let kinds = vec![Kind::BacklogItemDone, Kind::SprintAtRisk, Kind::TaskImpeded];
        assert_eq!(kinds_column(&kinds), "1,5,7");
        assert_eq!(kinds_from_column("1,5,7"), kinds);
        assert_eq!(kinds_from_column("1,99,x,"), vec![Kind::BacklogItemDone]);
    }

    #[test]
    fn retry_delays_grow_with_jitter_up_to_the_ceiling() {
        let policy = RetryPolicy::default();
        for failures in 1..=7 {
            let delay = policy.delay_after(failures);
            let base = 5.0 * 2f64.powi(failures as i32 - 1);
            let seconds = delay.as_secs_f64();
            assert!(
                (base * 0.8..=base * 1.2).contains(&seconds),
                "{failures}: {seconds}"
            );
        }
        let capped = policy.delay_after(30).as_secs_f64();
        assert!((720.0..=1080.0).contains(&capped), "{capped}");
    }

    #[test]
    fn the_previous_secret_signs_until_its_overlap_ends() {
        let secrets = SigningSecrets {
            current: "new".into(),
            previous: Some("old".into()),
        };
        assert_eq!(secrets.valid_at(Some(100), 99), vec!["new", "old"]);
        assert_eq!(secrets.valid_at(Some(100), 100), vec!["new"]);
        assert_eq!(secrets.valid_at(None, 0), vec!["new"]);
    }
}
