//! Consuming a service's stream with any number of replicas: one durable pull consumer
//! they share, explicit acknowledgements, each message acknowledged only after the
//! [`BatchHandler`] took effect.
//!
//! JetStream hands each message to one replica at a time. One that is not acknowledged
//! within the consumer's ack wait (its replica was killed, or partitioned away) is
//! delivered again, to whichever replica pulls next; one the handler failed is handed back
//! at once with a delay (`-NAK`), growing with its deliveries. So messages are handled at
//! least once and in no particular order across replicas: the handler must be idempotent
//! and order-free (the coordinator is, by the revision guard; docs/design.md §3).

use std::collections::HashSet;
use std::time::Duration;

use agilepm_proto::events::v1::Event;
use anyhow::Context as _;
use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use futures::stream::FuturesUnordered;
use futures::{FutureExt as _, StreamExt as _};
use prost::Message as _;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::domain::service_name::ServiceName;
use crate::events::failure_run::FailureRun;
use crate::events::follower::{BatchHandler, FollowOptions, backoff, batch_span};
use crate::events::jetstream::{connect, ensure_stream};
use crate::wire::config::NatsConfig;

/// What to consume and how.
#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    /// The durable consumer's name, shared by the replicas (e.g. `coordinator`).
    pub durable: String,
    /// Only these event types reach the handler (empty: all); the rest are acknowledged
    /// unseen.
    pub event_types: Vec<String>,
    /// Largest batch handed to the handler.
    pub max_batch: usize,
    /// Batches one replica handles at once.
    pub in_flight: usize,
    /// Messages the consumer hands out unacknowledged at most, over all replicas.
    pub max_ack_pending: i64,
}

impl Default for ConsumeOptions {
    fn default() -> Self {
        ConsumeOptions {
            durable: String::new(),
            event_types: Vec::new(),
            max_batch: 256,
            in_flight: 4,
            max_ack_pending: 20_000,
        }
    }
}

/// Consumes `service`'s stream as `options.durable` until `shutdown`, handing batches to
/// `handler`, connected as `consumer` (its NATS user and inbox). Batches under way when
/// `shutdown` comes are finished and acknowledged.
pub async fn consume<H: BatchHandler>(
    config: &NatsConfig,
    consumer: ServiceName,
    service: ServiceName,
    options: &ConsumeOptions,
    handler: &H,
    shutdown: CancellationToken,
) {
    let context = match connect(config, consumer).await {
        Ok(context) => context,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "cannot consume from JetStream");
            return;
        }
    };
    let retry = FollowOptions::default();
    let mut run = FailureRun::new("consuming from JetStream");
    while !shutdown.is_cancelled() {
        let outcome = consume_once(
            &context, config, service, options, handler, &shutdown, &mut run,
        )
        .await;
        let Err(error) = outcome else { break };
        let failures = run.failed(&format!("{error:#}"));
        handler.on_error(&error);
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(backoff(&retry, failures)) => {}
        }
    }
}

/// One pull subscription: runs until `shutdown` (Ok) or the subscription fails.
async fn consume_once<H: BatchHandler>(
    context: &async_nats::jetstream::Context,
    config: &NatsConfig,
    service: ServiceName,
    options: &ConsumeOptions,
    handler: &H,
    shutdown: &CancellationToken,
    run: &mut FailureRun,
) -> anyhow::Result<()> {
    let stream = ensure_stream(context, service, config).await?;
    let consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            &options.durable,
            pull::Config {
                durable_name: Some(options.durable.clone()),
                description: Some("agilepm: replicas share it; ack after effect".into()),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait: config.ack_wait,
                max_deliver: -1,
                max_ack_pending: options.max_ack_pending,
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("the durable consumer {}", options.durable))?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(options.max_batch)
        .heartbeat(Duration::from_secs(5))
        .messages()
        .await
        .context("pulling messages")?;
    handler.on_resumed();
    let wanted: HashSet<&str> = options.event_types.iter().map(String::as_str).collect();
    let mut in_flight = FuturesUnordered::new();
    let max_in_flight = options.in_flight.max(1);
    let mut ended: anyhow::Result<()> = Ok(());
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(handled) = in_flight.next(), if !in_flight.is_empty() => {
                if handled {
                    run.progressed();
                }
            }
            message = messages.next(), if in_flight.len() < max_in_flight => {
                let first = match message {
                    Some(Ok(first)) => first,
                    Some(Err(error)) => {
                        ended = Err(anyhow::Error::new(error).context("pulling a message"));
                        break;
                    }
                    None => {
                        ended = Err(anyhow::anyhow!("JetStream ended the pull subscription"));
                        break;
                    }
                };
                let mut batch = vec![first];
                let mut failed = None;
                while batch.len() < options.max_batch {
                    match messages.next().now_or_never() {
                        Some(Some(Ok(message))) => batch.push(message),
                        Some(Some(Err(error))) => {
                            failed = Some(error);
                            break;
                        }
                        Some(None) | None => break,
                    }
                }
                // The messages pulled are handled even if the pull then failed: dropped,
                // they would wait out the ack wait for nothing.
                in_flight.push(handle_batch(handler, batch, &wanted));
                if let Some(error) = failed {
                    ended = Err(anyhow::Error::new(error).context("pulling a message"));
                    break;
                }
            }
        }
    }
    // Whatever is under way takes effect anyway: let it finish and be acknowledged.
    while in_flight.next().await.is_some() {}
    ended
}

/// Handles one batch of messages and acknowledges it: each message once the handler took
/// effect, or back with a delay when it failed. Whether the handler succeeded.
async fn handle_batch<H: BatchHandler>(
    handler: &H,
    messages: Vec<async_nats::jetstream::Message>,
    wanted: &HashSet<&str>,
) -> bool {
    let mut events = Vec::with_capacity(messages.len());
    let mut carriers = Vec::with_capacity(messages.len());
    for message in messages {
        match Event::decode(message.payload.clone()) {
            Ok(event) if wanted.is_empty() || wanted.contains(event.event_type.as_str()) => {
                events.push(event);
                carriers.push(message);
            }
            Ok(_) => acknowledge(&message, AckKind::Ack).await,
            Err(error) => {
                // Handing it out again cannot help: logged, and taken out of the stream's
                // deliveries.
                tracing::error!(subject = %message.subject, %error, "undecodable event message; terminated");
                acknowledge(&message, AckKind::Term).await;
            }
        }
    }
    if events.is_empty() {
        return true;
    }
    match handler
        .handle(&events)
        .instrument(batch_span(&events))
        .await
    {
        Ok(()) => {
            for message in &carriers {
                acknowledge(message, AckKind::Ack).await;
            }
            if let Some(last) = events.last() {
                handler.on_handled(last, events.len());
            }
            true
        }
        Err(error) => {
            tracing::warn!(error = %format!("{error:#}"), events = events.len(), "a batch failed; handing it back");
            handler.on_error(&error);
            let retry = FollowOptions::default();
            for message in &carriers {
                let deliveries = message.info().map_or(1, |info| info.delivered.max(1));
                let delay = backoff(&retry, u32::try_from(deliveries).unwrap_or(u32::MAX));
                acknowledge(message, AckKind::Nak(Some(delay))).await;
            }
            false
        }
    }
}

/// Sends `kind` for `message`. A lost acknowledgement only means a redelivery, which the
/// handler tolerates.
async fn acknowledge(message: &async_nats::jetstream::Message, kind: AckKind) {
    if let Err(error) = message.ack_with(kind).await {
        tracing::warn!(%error, subject = %message.subject, "an acknowledgement was not sent; the message will be delivered again");
    }
}
