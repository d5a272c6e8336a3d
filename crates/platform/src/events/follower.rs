//! Following another service's event feed from a durable checkpoint.
//!
//! [`follow`] subscribes after the saved position, hands events to a [`BatchHandler`] in
//! batches, and saves the position of a batch's last event only after the handler has
//! succeeded, so a crash or an error means a replay, never a skipped event. Consumers
//! therefore must be idempotent (the coordinator is, by the revision guard). Broken
//! streams and handler errors are retried with exponential backoff and jitter.
//!
//! Each batch is handled in a span of its own (`handle_events`) linked to the spans that
//! wrote its events (their `trace_parent`): the work an event causes can be followed
//! from the request that wrote it. Links, not a parent: a batch holds events of many
//! requests, and the calls it makes belong to the batch's own trace.

use std::future::Future;
use std::time::{Duration, Instant};

use agilepm_proto::events::v1::event_feed_service_client::EventFeedServiceClient;
use agilepm_proto::events::v1::{
    AcknowledgeFeedPositionRequest, Event, Heartbeat, SubscribeRequest, subscribe_response,
};
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::{FutureExt as _, StreamExt as _};
use rand::Rng as _;
use tokio_util::sync::CancellationToken;

use crate::domain::time::now_micros;
use crate::storage::db::Db;
use crate::wire::client::PeerChannel;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Handles the events of a feed, a batch at a time.
pub trait BatchHandler: Send + Sync {
    /// Applies a batch (in feed order). Returning an error makes the follower back off and
    /// re-deliver the batch from the last checkpoint.
    fn handle(&self, batch: &[Event]) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Called, in feed order, once a batch and every batch before it were handled, with
    /// the batch's last event and its size (e.g. to report progress).
    fn on_handled(&self, _last: &Event, _events: usize) {}

    /// Called for every heartbeat, after every event before it was handled (e.g. to
    /// record the head for lag reporting).
    fn on_heartbeat(&self, _heartbeat: &Heartbeat) {}

    /// Called when following fails and will be retried (e.g. to report unhealthy).
    fn on_error(&self, _error: &anyhow::Error) {}

    /// Called when a source without heartbeats (a JetStream consumer) is reachable again
    /// after a failure, so a handler that reported unhealthy need not wait for an event
    /// that may not come.
    fn on_resumed(&self) {}
}

/// Where a consumer keeps its position.
pub trait CheckpointStore: Send + Sync {
    /// The saved position, or empty for the beginning.
    fn load(&self) -> impl Future<Output = anyhow::Result<String>> + Send;
    /// Saves `position` durably.
    fn save(&self, position: &str) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// A checkpoint row in the consumer service's own database (`feed_checkpoints`).
#[derive(Clone, Debug)]
pub struct DbCheckpoint {
    db: Db,
    consumer: String,
}

impl DbCheckpoint {
    /// The checkpoint named `consumer` in `db`.
    pub fn new(db: Db, consumer: impl Into<String>) -> DbCheckpoint {
        DbCheckpoint {
            db,
            consumer: consumer.into(),
        }
    }
}

impl CheckpointStore for DbCheckpoint {
    async fn load(&self) -> anyhow::Result<String> {
        let position: Option<String> =
            sqlx::query_scalar("SELECT position FROM feed_checkpoints WHERE consumer = $1")
                .bind(&self.consumer)
                .fetch_optional(self.db.pool())
                .await?;
        Ok(position.unwrap_or_default())
    }

    async fn save(&self, position: &str) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO feed_checkpoints (consumer, position, update_time_us) VALUES ($1, $2, $3) \
             ON CONFLICT (consumer) DO UPDATE SET position = excluded.position, \
             update_time_us = excluded.update_time_us",
        )
        .bind(&self.consumer)
        .bind(position)
        .bind(now_micros())
        .execute(self.db.pool())
        .await?;
        Ok(())
    }
}

/// What to follow and how.
#[derive(Debug, Clone)]
pub struct FollowOptions {
    /// Only these event types (empty: all).
    pub event_types: Vec<String>,
    /// Largest batch handed to the handler.
    pub max_batch: usize,
    /// First retry delay; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// Heartbeat interval asked of the server, in milliseconds.
    pub heartbeat_interval_ms: i32,
    /// While events keep coming, the checkpoint is saved at most this often (and always
    /// as soon as the stream goes quiet). A crash replays at most this much, which the
    /// handler must tolerate anyway (it is at-least-once); saving after every batch
    /// would cost a commit per batch. Saves run beside the batches, one at a time.
    pub checkpoint_every: Duration,
    /// Batches handled at once. Above one, a batch may finish before an earlier one, so
    /// only for handlers whose effects do not depend on order (the coordinator's, under
    /// its revision guard); positions are still saved in feed order.
    pub in_flight: usize,
    /// The name this follower registers under with the feed's retention
    /// (`AcknowledgeFeedPosition`): the feed then keeps every event it has not saved a
    /// position past. `None` registers nothing.
    pub consumer: Option<String>,
    /// How often a saved position is acknowledged to the feed, at most.
    pub acknowledge_every: Duration,
}

impl Default for FollowOptions {
    fn default() -> Self {
        FollowOptions {
            event_types: Vec::new(),
            max_batch: 256,
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            heartbeat_interval_ms: 1000,
            checkpoint_every: Duration::from_millis(100),
            in_flight: 1,
            consumer: None,
            acknowledge_every: Duration::from_secs(10),
        }
    }
}

use crate::events::failure_run::FailureRun;
pub use crate::events::failure_run::PERSISTENT_FAILURE;

/// Follows the feed behind `client` until `shutdown`, resuming from `checkpoint`.
pub async fn follow<H, C>(
    client: EventFeedServiceClient<PeerChannel>,
    checkpoint: &C,
    handler: &H,
    options: &FollowOptions,
    shutdown: CancellationToken,
) where
    H: BatchHandler,
    C: CheckpointStore,
{
    let mut run = FailureRun::new("following the feed");
    while !shutdown.is_cancelled() {
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = follow_once(client.clone(), checkpoint, handler, options, &mut run) => outcome,
        };
        if let Err(error) = outcome {
            let error_text = format!("{error:#}");
            let deleted_before_handled = error
                .downcast_ref::<tonic::Status>()
                .is_some_and(|status| status.code() == tonic::Code::OutOfRange);
            // Failing for longer than PERSISTENT_FAILURE is a fault (the coordinator's
            // health turns too); events deleted before they were handled are one at once.
            let failures = if deleted_before_handled {
                run.failed_for_good(
                    &error_text,
                    "the feed has deleted events this consumer had not handled (its retention \
                     hard cap); following cannot go on without an operator (deploy/README.md, \
                     \"Outbox retention\")",
                )
            } else {
                run.failed(&error_text)
            };
            handler.on_error(&error);
            let delay = backoff(options, failures);
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
}

/// A batch (or a lone heartbeat) handed to the handler, once handled.
struct Handled {
    /// The batch's last event and its size, if it had events.
    last: Option<(Event, usize)>,
    /// The heartbeat that ended the batch, if one did.
    heartbeat: Option<Heartbeat>,
}

/// Handles one batch; a batch without events (a lone heartbeat) is handled at once.
async fn handle_batch<H: BatchHandler>(
    handler: &H,
    mut batch: Vec<Event>,
    heartbeat: Option<Heartbeat>,
) -> anyhow::Result<Handled> {
    if !batch.is_empty() {
        handler
            .handle(&batch)
            .instrument(batch_span(&batch))
            .await?;
    }
    let size = batch.len();
    Ok(Handled {
        last: batch.pop().map(|event| (event, size)),
        heartbeat,
    })
}

/// Links a batch's span keeps at most (one per distinct writing span).
const MAX_LINKS: usize = 128;

/// The span a batch is handled in, linked to the spans that wrote its events.
pub(crate) fn batch_span(batch: &[Event]) -> tracing::Span {
    let span = tracing::info_span!("handle_events", events = batch.len());
    let mut linked = std::collections::HashSet::new();
    for event in batch {
        if linked.len() == MAX_LINKS {
            break;
        }
        if linked.insert(event.trace_parent.as_str())
            && let Some(writer) = crate::storage::trace_parent::span_context(&event.trace_parent)
        {
            span.add_link(writer);
        }
    }
    span
}

/// One subscription: runs until the stream breaks or a batch fails.
async fn follow_once<H: BatchHandler, C: CheckpointStore>(
    mut client: EventFeedServiceClient<PeerChannel>,
    checkpoint: &C,
    handler: &H,
    options: &FollowOptions,
    run: &mut FailureRun,
) -> anyhow::Result<()> {
    let after_position = checkpoint.load().await?;
    let mut request = tonic::Request::new(SubscribeRequest {
        after_position,
        event_types: options.event_types.clone(),
        aggregate_ids: Vec::new(),
        heartbeat_interval_ms: options.heartbeat_interval_ms,
    });
    // A subscription lives as long as it is healthy; no overall deadline.
    request.set_timeout(Duration::from_secs(365 * 24 * 3600));
    let mut stream = client.subscribe(request).await?.into_inner();
    // Batches being handled, completed in feed order: a position is saved only once
    // every batch before it has been handled too.
    let mut in_flight = FuturesOrdered::new();
    let max_in_flight = options.in_flight.max(1);
    let mut saved = String::new();
    // Handled but not yet saved, and when the last save started.
    let mut unsaved: Option<String> = None;
    let mut last_save = Instant::now();
    // The save under way, if any, resolving to the position it saved. It runs beside the
    // batches instead of in front of them: awaited inline, each save (a commit, on
    // PostgreSQL a WAL flush) stopped the follower taking and finishing batches, so an
    // event arriving meanwhile waited for it. One at a time, so positions are saved in
    // the order they were handled.
    let mut saving: Option<BoxFuture<'_, anyhow::Result<String>>> = None;
    let mut last_acknowledged: Option<Instant> = None;
    loop {
        // Start a save that is due and may start.
        if saving.is_none()
            && last_save.elapsed() >= options.checkpoint_every
            && let Some(position) = unsaved.take()
        {
            last_save = Instant::now();
            saving = Some(
                async move {
                    checkpoint.save(&position).await?;
                    Ok(position)
                }
                .boxed(),
            );
        }
        // If the stream stays quiet until the save is due, save then rather than leave
        // the position to a later batch.
        let save_due = options.checkpoint_every.saturating_sub(last_save.elapsed());
        tokio::select! {
            Some(position) = async { Some(saving.as_mut()?.await) }, if saving.is_some() => {
                saving = None;
                saved = position?;
                if let Some(consumer) = &options.consumer
                    && last_acknowledged.is_none_or(|at| at.elapsed() >= options.acknowledge_every)
                {
                    last_acknowledged = Some(Instant::now());
                    tokio::spawn(acknowledge(client.clone(), consumer.clone(), saved.clone()));
                }
            }
            Some(handled) = in_flight.next(), if !in_flight.is_empty() => {
                let handled: Handled = match handled {
                    Ok(handled) => handled,
                    Err(error) => {
                        // The batches after it are already under way and their effects
                        // happen whether or not we wait: let them finish (and the
                        // handler see their outcomes) instead of dropping them mid-call.
                        // Nothing of theirs is saved; the whole run is replayed.
                        while in_flight.next().await.is_some() {}
                        return Err(error);
                    }
                };
                if let Some((last, events)) = &handled.last {
                    handler.on_handled(last, *events);
                    unsaved = Some(last.position.clone());
                    run.progressed();
                }
                if let Some(heartbeat) = &handled.heartbeat {
                    // Filtered-out events need not be scanned again after a restart.
                    if !heartbeat.scanned_position.is_empty() && heartbeat.scanned_position != saved {
                        unsaved = Some(heartbeat.scanned_position.clone());
                    }
                    handler.on_heartbeat(heartbeat);
                }
            }
            message = stream.next(), if in_flight.len() < max_in_flight => {
                let Some(first) = message else {
                    anyhow::bail!("the feed closed the stream");
                };
                // A heartbeat ends a batch: every event before it must be handled before
                // the heartbeat's scanned position may be saved.
                let mut batch = Vec::with_capacity(options.max_batch);
                let mut heartbeat = push(first?, &mut batch);
                while heartbeat.is_none() && batch.len() < options.max_batch {
                    match stream.next().now_or_never() {
                        Some(Some(message)) => heartbeat = push(message?, &mut batch),
                        Some(None) | None => break,
                    }
                }
                in_flight.push_back(handle_batch(handler, batch, heartbeat));
            }
            () = tokio::time::sleep(save_due), if unsaved.is_some() && saving.is_none() => {}
        }
    }
}

/// Tells the feed that `consumer` has saved `position`, so retention may delete what
/// lies before it. A failure only makes the feed keep events longer.
async fn acknowledge(
    mut client: EventFeedServiceClient<PeerChannel>,
    consumer: String,
    position: String,
) {
    let request = AcknowledgeFeedPositionRequest { consumer, position };
    if let Err(status) = client.acknowledge_feed_position(request).await {
        tracing::warn!(%status, "the feed position could not be acknowledged; the feed keeps its events longer");
    }
}

/// Adds an event to the batch, or returns the heartbeat.
fn push(
    message: agilepm_proto::events::v1::SubscribeResponse,
    batch: &mut Vec<Event>,
) -> Option<Heartbeat> {
    match message.kind {
        Some(subscribe_response::Kind::Event(event)) => {
            batch.push(event);
            None
        }
        Some(subscribe_response::Kind::Heartbeat(heartbeat)) => Some(heartbeat),
        None => None,
    }
}

/// Exponential backoff with full jitter.
pub fn backoff(options: &FollowOptions, failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    let ceiling = options
        .min_backoff
        .saturating_mul(1 << exponent)
        .min(options.max_backoff);
    let millis = ceiling.as_millis().max(1) as u64;
    Duration::from_millis(rand::rng().random_range(millis / 2..=millis))
}
