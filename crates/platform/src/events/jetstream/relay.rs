//! The outbox relay: a service's committed events, in feed order, to its JetStream
//! stream, each exactly once.
//!
//! The relay subscribes to its own process's feed hub (no network hop, no second reader
//! of the outbox) and publishes a batch of events pipelined, then awaits their
//! acknowledgements in order. Its position is saved (`feed_checkpoints`, consumer
//! [`RELAY_CONSUMER`], also registered with the outbox's retention so no event is deleted
//! before it is relayed) only after the acknowledgements.
//!
//! # Exactly once in the stream
//!
//! Each publish carries `Nats-Msg-Id` (the event id) *and* `Nats-Expected-Last-Sequence`
//! (the stream sequence the previous event got). The second is the fence:
//! * A relay that starts (or restarts, or retries after an ambiguous failure) first reads
//!   the stream's last message: its [`POSITION_HEADER`] says where in the feed the stream
//!   ends, which is ahead of the saved checkpoint when a relay died between an
//!   acknowledgement and its save. It resumes after the later of the two.
//! * JetStream stores a message only if the stream still ends where the relay last saw
//!   it, so a publish from a relay with a stale view (a second replica of the service, a
//!   publish buffered across a reconnect) is refused instead of stored twice or out of
//!   order. The duplicate window covers the rest: a retry of a stored message is
//!   acknowledged as a duplicate, not stored.
//!
//! Unlike `Nats-Expected-Last-Msg-Id`, the stream's last sequence survives a server
//! restart however long the stream was idle, so the fence never locks a relay out.
//!
//! # One active relay per service
//!
//! Every replica of a service runs a relay; JetStream itself picks the active one. A
//! relay whose publish is refused because another relay moved the stream on, or finds
//! its event already stored (a relay trailing the active one), stands by:
//! it re-reads the stream's end every [`STANDBY_CHECK`] and takes over only when the
//! stream has not moved for a whole check while its feed has events the stream lacks.
//! Two standbys taking over at once are harmless (the fence admits one).

use std::sync::Arc;
use std::time::{Duration, Instant};

use agilepm_proto::events::v1::{Event, subscribe_response};
use anyhow::Context as _;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, stream};
use tokio_util::sync::CancellationToken;

use crate::domain::service_name::ServiceName;
use crate::events::failure_run::FailureRun;
use crate::events::feed::filter::Filter;
use crate::events::feed::hub::Hub;
use crate::events::feed::subscription::Subscription;
use crate::events::feed::{Position, retention};
use crate::events::follower::{CheckpointStore, DbCheckpoint, FollowOptions, backoff};
use crate::events::jetstream::meters::RelayMeters;
use crate::events::jetstream::{
    EVENT_TYPE_HEADER, POSITION_HEADER, connect, encode, ensure_stream, subject,
};
use crate::storage::db::Db;
use crate::wire::auth::Caller;
use crate::wire::config::NatsConfig;

/// The relay's checkpoint name, and its name with the outbox's retention.
pub const RELAY_CONSUMER: &str = "nats-relay";

/// How often a standby relay looks at the stream's end.
pub const STANDBY_CHECK: Duration = Duration::from_secs(1);

/// The position is saved at most this often while events keep coming (and as soon as
/// they stop). A crash replays at most this much, which the fence turns into nothing.
const SAVE_EVERY: Duration = Duration::from_millis(200);

/// How often the saved position is acknowledged to the outbox's retention, at most.
const ACKNOWLEDGE_EVERY: Duration = Duration::from_secs(10);

/// Heartbeats of the relay's subscription: when it saves a position that is due.
const HEARTBEAT: Duration = Duration::from_millis(500);

/// Where the stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StreamEnd {
    /// The last message's sequence (0 for an empty stream).
    sequence: u64,
    /// Its event's feed position, if it is still there and carries one of this feed.
    position: Option<Position>,
}

/// How one run of the relay ended.
enum Ended {
    /// Another relay moved the stream on (a publish was refused by the fence, or found
    /// its event already stored): stand by.
    Fenced,
}

/// Relays `service`'s outbox (served by `hub`) to its stream until `shutdown`.
pub async fn run(
    hub: Arc<Hub>,
    db: Db,
    service: ServiceName,
    config: NatsConfig,
    shutdown: CancellationToken,
) {
    let context = match connect(&config, service).await {
        Ok(context) => context,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "the outbox relay cannot start");
            return;
        }
    };
    let relay = Relay {
        meters: RelayMeters::new(service.as_str(), &hub),
        checkpoint: DbCheckpoint::new(db.clone(), RELAY_CONSUMER),
        feed_id: hub.reader().feed_id().to_owned(),
        hub,
        db,
        service,
        config,
        context,
    };
    let retry = FollowOptions::default();
    let mut run = FailureRun::new("relaying the outbox to JetStream");
    tracing::info!(stream = %super::stream_name(service), "relaying the outbox to JetStream");
    while !shutdown.is_cancelled() {
        let ended = tokio::select! {
            () = shutdown.cancelled() => break,
            ended = relay.relay_once(&mut run) => ended,
        };
        match ended {
            Ok(Ended::Fenced) => {
                relay.meters.active(false);
                tracing::info!("another relay is publishing this outbox; standing by");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = relay.stand_by() => {}
                }
                tracing::info!("the active relay stopped; taking over");
            }
            Err(error) => {
                relay.meters.active(false);
                // NATS restarting is a blip; failing for long is a fault, reported once.
                let failures = run.failed(&format!("{error:#}"));
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(backoff(&retry, failures)) => {}
                }
            }
        }
    }
}

/// One service's relay.
struct Relay {
    hub: Arc<Hub>,
    db: Db,
    service: ServiceName,
    config: NatsConfig,
    context: jetstream::Context,
    checkpoint: DbCheckpoint,
    feed_id: String,
    meters: RelayMeters,
}

impl Relay {
    /// Where the stream ends now.
    async fn stream_end(&self, stream: &stream::Stream) -> anyhow::Result<StreamEnd> {
        let info = stream.get_info().await.context("the stream's state")?;
        let sequence = info.state.last_sequence;
        if sequence == 0 || info.state.messages == 0 {
            return Ok(StreamEnd {
                sequence,
                position: None,
            });
        }
        let position = match stream.get_raw_message(sequence).await {
            Ok(message) => message
                .headers
                .get(POSITION_HEADER)
                .and_then(|value| Position::parse("", value.as_str(), &self.feed_id).ok()),
            // Deleted or aged out since the state was read: the checkpoint decides.
            Err(error) => {
                tracing::debug!(%error, sequence, "the stream's last message is gone");
                None
            }
        };
        Ok(StreamEnd { sequence, position })
    }

    /// Relays from where the stream (or the checkpoint) ends until something fails or
    /// another relay is found publishing. The run of failures ends once a batch lands.
    async fn relay_once(&self, run: &mut FailureRun) -> anyhow::Result<Ended> {
        let stream = ensure_stream(&self.context, self.service, &self.config).await?;
        let end = self.stream_end(&stream).await?;
        let saved = Position::parse("", &self.checkpoint.load().await?, &self.feed_id)
            .map_err(|error| anyhow::anyhow!("the relay's saved position: {error}"))?;
        let mut relayed = end.position.map_or(saved, |position| position.max(saved));
        let mut last_sequence = end.sequence;
        self.meters.resumed_at(relayed);
        self.meters.active(true);
        let filter = Filter {
            caller: Caller::service(self.service, None),
            event_types: Default::default(),
            aggregate_ids: Default::default(),
        };
        let mut subscription = Subscription::new(
            self.hub.clone(),
            filter,
            relayed,
            HEARTBEAT,
            crate::events::feed::FeedOptions::default().unavailable_after,
        );
        let mut saved_position = saved;
        let mut last_save = Instant::now();
        let mut last_acknowledged: Option<Instant> = None;
        loop {
            let messages = subscription
                .next()
                .await
                .map_err(|status| anyhow::anyhow!("reading the outbox: {}", status.message()))?;
            let events: Vec<Event> = messages
                .into_iter()
                .filter_map(|message| match message.kind {
                    Some(subscribe_response::Kind::Event(event)) => Some(event),
                    _ => None,
                })
                .collect();
            if !events.is_empty() {
                match self.publish(&events, &mut last_sequence).await? {
                    Published::All => {
                        let last = &events[events.len() - 1];
                        relayed = Position::parse("", &last.position, &self.feed_id)
                            .map_err(|error| anyhow::anyhow!("{error}"))?;
                        self.meters.relayed(events.len(), relayed);
                        run.progressed();
                    }
                    Published::Stopped(ended) => return Ok(ended),
                }
            }
            if relayed != saved_position && last_save.elapsed() >= SAVE_EVERY {
                self.checkpoint.save(&relayed.encode(&self.feed_id)).await?;
                saved_position = relayed;
                last_save = Instant::now();
                if last_acknowledged.is_none_or(|at| at.elapsed() >= ACKNOWLEDGE_EVERY) {
                    last_acknowledged = Some(Instant::now());
                    retention::acknowledge(&self.db, RELAY_CONSUMER, relayed).await?;
                }
            }
        }
    }

    /// Publishes `events` (in feed order) pipelined, fenced on the stream ending at
    /// `last_sequence`, and awaits their acknowledgements in order; `last_sequence`
    /// follows what landed.
    async fn publish(
        &self,
        events: &[Event],
        last_sequence: &mut u64,
    ) -> anyhow::Result<Published> {
        let mut pending = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            let expected = *last_sequence + i as u64;
            let mut message = PublishMessage::build()
                .payload(encode(event))
                .message_id(&event.event_id)
                .expected_last_sequence(expected)
                .header(POSITION_HEADER, event.position.as_str())
                .header(EVENT_TYPE_HEADER, event.event_type.as_str());
            if !event.trace_parent.is_empty() {
                message = message.header("traceparent", event.trace_parent.as_str());
            }
            let subject = subject(self.service, &event.tenant_id, &event.aggregate_id);
            pending.push(
                self.context
                    .send_publish(subject, message)
                    .await
                    .context("publishing an event")?,
            );
        }
        for (event, acknowledgement) in events.iter().zip(pending) {
            match acknowledgement.await {
                Ok(ack) if ack.duplicate => {
                    // Stored already, and not by this relay (it resumes after the stream's
                    // end and re-reads it after any failure): another relay is ahead of
                    // it. JetStream checks the duplicate before the fence, so this is how
                    // a relay that trails the active one learns of it.
                    tracing::debug!(event_id = %event.event_id, sequence = ack.sequence, "event was already in the stream");
                    return Ok(Published::Stopped(Ended::Fenced));
                }
                Ok(ack) => *last_sequence = ack.sequence,
                Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => {
                    return Ok(Published::Stopped(Ended::Fenced));
                }
                Err(error) => {
                    return Err(anyhow::Error::new(error)
                        .context(format!("publishing event {}", event.event_id)));
                }
            }
        }
        Ok(Published::All)
    }

    /// Waits while another relay is publishing: until the stream's end stays put for a
    /// whole [`STANDBY_CHECK`] although this process's feed has events beyond it.
    async fn stand_by(&self) {
        let mut seen: Option<StreamEnd> = None;
        loop {
            tokio::time::sleep(STANDBY_CHECK).await;
            let end = match ensure_stream(&self.context, self.service, &self.config).await {
                Ok(stream) => self.stream_end(&stream).await,
                Err(error) => Err(error),
            };
            let Ok(end) = end else {
                // NATS is away: the run that follows reports it.
                return;
            };
            let behind = match (self.hub.feed_head(), end.position) {
                (Some((head, _)), Some(position)) => head > position,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if behind && seen == Some(end) {
                return;
            }
            seen = Some(end);
        }
    }
}

/// How a publish of a batch went.
enum Published {
    /// Every event landed (or was already there in its place).
    All,
    /// The batch stopped short; the relay goes on as this says.
    Stopped(Ended),
}
