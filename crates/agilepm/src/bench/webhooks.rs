//! The notifier's share of the benchmark: `--webhooks N` subscriptions of the workload's
//! tenant to `backlog_item.done`, all at one local receiver that verifies every signature.
//!
//! Two measurements. During the estimate phase the receiver refuses everything and the
//! notifier runs with one attempt per delivery (`AGILEPM_NOTIFIER_MAX_ATTEMPTS=1`): each
//! DONE reaches the endpoint once and is dead-lettered; latency is the DONE event's occur
//! time (the body's `timestamp`) to that attempt's arrival, under the estimate load. Then
//! the receiver accepts, every subscription's dead letters are redelivered at once, and
//! deliveries/s is the `items × N` deliveries over the time from the redelivery to the
//! last received: the notifier's own rate (read, sign, POST, record), with nothing else
//! running.
//!
//! The baseline, measured in the same run: signed POSTs of the same bodies to a fresh
//! receiver by `N` senders one request at a time each (as the notifier's lanes send),
//! with no database or feed in between: the receiver's and the HTTP stack's ceiling.

use std::time::{Duration, Instant};

use agilepm_platform::wire::client::PeerChannel;
use agilepm_proto::notifier::v1::notifier_service_client::NotifierServiceClient;
use agilepm_proto::notifier::v1::redeliver_deliveries_request::Target;
use agilepm_proto::notifier::v1::{
    CreateSubscriptionRequest, NotificationType, RedeliverDeliveriesRequest,
};
use hdrhistogram::Histogram;
use serde::Serialize;

use super::report::{Percentiles, histogram};
use crate::webhook_receiver::{Answer, Behaviour, Received, Receiver};

/// The receiver and what was subscribed to it.
pub struct Webhooks {
    receiver: Receiver,
    client: NotifierServiceClient<PeerChannel>,
    subscriptions: Vec<String>,
}

/// What the notifier's deliveries measured.
#[derive(Debug, Serialize)]
pub struct WebhookResults {
    /// Subscriptions (each gets every DONE).
    pub subscriptions: usize,
    /// Deliveries received and accepted (2xx).
    pub deliveries: usize,
    /// Distinct (subscription, `webhook-id`) pairs among them: equal when nothing was sent
    /// twice.
    pub distinct: usize,
    /// Redelivered dead letters received per second, from the redelivery to the last.
    pub per_sec: f64,
    /// DONE event -> its first attempt received, during the estimate phase.
    pub latency_ms: Percentiles,
    /// Signed POSTs per second to a fresh receiver by as many one-at-a-time senders.
    pub baseline_posts_per_sec: f64,
    /// `per_sec` over the baseline.
    pub ratio_to_baseline: f64,
}

/// Subscribes `count` endpoints (0: none) of the workload's tenant at the notifier on
/// `channel`, all served by one receiver.
pub async fn subscribe(channel: PeerChannel, count: usize) -> anyhow::Result<Option<Webhooks>> {
    if count == 0 {
        return Ok(None);
    }
    let receiver = Receiver::start(Behaviour {
        always_fail: true,
        ..Behaviour::default()
    })
    .await;
    let mut client = NotifierServiceClient::new(channel);
    let mut secrets = Vec::new();
    let mut subscriptions = Vec::new();
    for n in 0..count {
        // One path per subscription, so each is its own endpoint (and lane).
        let created = client
            .create_subscription(CreateSubscriptionRequest {
                request_id: uuid::Uuid::new_v4().to_string(),
                target_url: format!("{}?subscription={n}", receiver.url()),
                notification_types: vec![NotificationType::BacklogItemDone as i32],
                description: format!("bench {n}"),
                disabled: false,
            })
            .await?
            .into_inner();
        secrets.push(created.signing_secret);
        subscriptions.extend(created.subscription.map(|s| s.subscription_id));
    }
    receiver.trust(&secrets);
    Ok(Some(Webhooks {
        receiver,
        client,
        subscriptions,
    }))
}

impl Webhooks {
    /// Waits (at most `timeout` each) for every DONE to reach every subscription once,
    /// then redelivers them all and measures the drain, and the baseline.
    pub async fn measure(
        mut self,
        done_items: usize,
        timeout: Duration,
    ) -> anyhow::Result<WebhookResults> {
        let expected = done_items * self.subscriptions.len();
        let first_attempts = self.wait_for(expected, timeout, |_| true).await;
        let mut latency: Histogram<u64> = histogram();
        for received in &first_attempts {
            let occurred = received.body["timestamp"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.timestamp_micros());
            if let Some(occurred) = occurred {
                latency.saturating_record((received.at_us - occurred).max(0) as u64);
            }
        }
        // Each is dead-lettered once the notifier records its one refused attempt, a
        // moment after the refusal arrives: redeliver every subscription's until all
        // were.
        self.receiver.behave(Behaviour::default());
        let started = Instant::now();
        let mut redelivered = 0;
        let deadline = tokio::time::Instant::now() + timeout;
        while redelivered < expected && tokio::time::Instant::now() < deadline {
            for id in &self.subscriptions {
                let request = RedeliverDeliveriesRequest {
                    target: Some(Target::SubscriptionId(id.clone())),
                };
                let response = self.client.redeliver_deliveries(request).await?;
                redelivered += response.into_inner().redelivered as usize;
            }
            if redelivered < expected {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let log = self
            .wait_for(expected, timeout, |r| {
                matches!(r.answer, Answer::Accepted | Answer::Late)
            })
            .await;
        let accepted: Vec<&Received> = log
            .iter()
            .filter(|r| matches!(r.answer, Answer::Accepted | Answer::Late))
            .collect();
        let per_sec = match accepted.last() {
            Some(last) => {
                accepted.len() as f64 / last.at.duration_since(started).as_secs_f64().max(1e-9)
            }
            None => 0.0,
        };
        let distinct = accepted
            .iter()
            .map(|r| (r.query.as_str(), r.webhook_id.as_str()))
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        anyhow::ensure!(
            redelivered == expected,
            "{redelivered} dead letters redelivered, {expected} expected"
        );
        let senders = self.subscriptions.len();
        let baseline = baseline_posts_per_sec(senders, accepted.len().max(1000)).await?;
        Ok(WebhookResults {
            subscriptions: senders,
            deliveries: accepted.len(),
            distinct,
            per_sec,
            latency_ms: Percentiles::of(&latency),
            baseline_posts_per_sec: baseline,
            ratio_to_baseline: per_sec / baseline.max(1e-9),
        })
    }

    /// The requests `counted` of, once there are `expected` (or `timeout` passed).
    async fn wait_for(
        &self,
        expected: usize,
        timeout: Duration,
        counted: impl Fn(&Received) -> bool,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let log: Vec<Received> = self
                .receiver
                .received()
                .into_iter()
                .filter(&counted)
                .collect();
            if log.len() >= expected || tokio::time::Instant::now() > deadline {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `total` signed POSTs to a fresh receiver by `senders` senders, one request at a time
/// each; returns requests per second.
async fn baseline_posts_per_sec(senders: usize, total: usize) -> anyhow::Result<f64> {
    let receiver = Receiver::start(Behaviour::default()).await;
    let secret = format!(
        "whsec_{}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32])
    );
    receiver.trust(std::slice::from_ref(&secret));
    let client = reqwest::Client::new();
    let body = r#"{"type":"backlog_item.done","timestamp":"2026-01-01T00:00:00.000000Z","data":{"backlog_item_id":"x"}}"#;
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for sender in 0..senders {
        let (client, url, secret) = (client.clone(), receiver.url(), secret.clone());
        let count = total / senders + usize::from(sender < total % senders);
        workers.spawn(async move {
            for n in 0..count {
                let id = format!("baseline-{sender}-{n}");
                let timestamp = chrono::Utc::now().timestamp();
                let signature = crate::webhook_receiver::sign(&secret, &id, timestamp, body);
                client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("webhook-id", &id)
                    .header("webhook-timestamp", timestamp.to_string())
                    .header("webhook-signature", format!("v1,{signature}"))
                    .body(body)
                    .send()
                    .await?
                    .error_for_status()?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(outcome) = workers.join_next().await {
        outcome??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64().max(1e-9))
}
