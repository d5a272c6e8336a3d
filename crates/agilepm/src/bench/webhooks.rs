//! The notifier's share of the benchmark: `--webhooks N` subscriptions of the workload's
//! tenant to `backlog_item.done`, all at one local receiver that verifies every signature.
//! The items turn DONE in a burst at the end of the estimate phase (every item's last
//! hours are estimated on the same last day), so the notifier has `items × N` deliveries
//! to make at once: deliveries/s is measured from the first to the last one received, and
//! latency from the DONE event's occur time (the body's `timestamp`) to its receipt.
//!
//! The baseline, measured in the same run: signed POSTs of the same bodies to a fresh
//! receiver by `N` senders one request at a time each (as the notifier's lanes send),
//! with no database or feed in between: the receiver's and the HTTP stack's ceiling.

use std::time::{Duration, Instant};

use agilepm_platform::wire::client::PeerChannel;
use agilepm_proto::notifier::v1::notifier_service_client::NotifierServiceClient;
use agilepm_proto::notifier::v1::{CreateSubscriptionRequest, NotificationType};
use hdrhistogram::Histogram;
use serde::Serialize;

use super::report::{Percentiles, histogram};
use crate::webhook_receiver::{Answer, Behaviour, Received, Receiver};

/// The receiver and what was subscribed to it.
pub struct Webhooks {
    receiver: Receiver,
    subscriptions: usize,
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
    /// Deliveries received per second, first to last.
    pub per_sec: f64,
    /// DONE event -> delivery received.
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
    let receiver = Receiver::start(Behaviour::default()).await;
    let mut client = NotifierServiceClient::new(channel);
    let mut secrets = Vec::new();
    for n in 0..count {
        // One path per subscription, so each is its own endpoint (and lane).
        let created = client
            .create_subscription(CreateSubscriptionRequest {
                target_url: format!("{}?subscription={n}", receiver.url()),
                notification_types: vec![NotificationType::BacklogItemDone as i32],
                description: format!("bench {n}"),
                disabled: false,
            })
            .await?
            .into_inner();
        secrets.push(created.signing_secret);
    }
    receiver.trust(&secrets);
    Ok(Some(Webhooks {
        receiver,
        subscriptions: count,
    }))
}

impl Webhooks {
    /// Waits (at most `timeout`) for `done_items` DONE notifications per subscription,
    /// then measures them and the baseline.
    pub async fn measure(
        self,
        done_items: usize,
        timeout: Duration,
    ) -> anyhow::Result<WebhookResults> {
        let expected = done_items * self.subscriptions;
        let deadline = tokio::time::Instant::now() + timeout;
        let log = loop {
            let log = self.receiver.received();
            if accepted(&log).count() >= expected || tokio::time::Instant::now() > deadline {
                break log;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let accepted: Vec<&Received> = accepted(&log).collect();
        let per_sec = match (accepted.first(), accepted.last()) {
            (Some(first), Some(last)) if accepted.len() > 1 => {
                (accepted.len() - 1) as f64
                    / last.at.duration_since(first.at).as_secs_f64().max(1e-9)
            }
            _ => 0.0,
        };
        let mut latency: Histogram<u64> = histogram();
        for received in &accepted {
            let occurred = received.body["timestamp"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.timestamp_micros());
            if let Some(occurred) = occurred {
                latency.saturating_record((received.at_us - occurred).max(0) as u64);
            }
        }
        let distinct = accepted
            .iter()
            .map(|r| (r.query.as_str(), r.webhook_id.as_str()))
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let baseline = baseline_posts_per_sec(self.subscriptions, accepted.len().max(1000)).await?;
        Ok(WebhookResults {
            subscriptions: self.subscriptions,
            deliveries: accepted.len(),
            distinct,
            per_sec,
            latency_ms: Percentiles::of(&latency),
            baseline_posts_per_sec: baseline,
            ratio_to_baseline: per_sec / baseline.max(1e-9),
        })
    }
}

fn accepted(log: &[Received]) -> impl Iterator<Item = &Received> {
    log.iter()
        .filter(|r| matches!(r.answer, Answer::Accepted | Answer::Late))
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
