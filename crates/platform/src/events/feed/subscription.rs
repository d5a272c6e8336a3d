//! One subscriber's stream: catch up from the database while behind the hub, then take
//! the hub's deliveries from its mailbox, filtering in memory, with heartbeats.
//!
//! The stream holds at most one batch of its own rows (and shares the hub's batches), and
//! tonic polls it only as fast as HTTP/2 flow control lets the client receive: a slow
//! reader slows its own stream and nothing else; once its mailbox overflows, it reads
//! the gap from the database like a subscriber resuming from an old position.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use agilepm_proto::events::v1::{Event, Heartbeat, SubscribeResponse, subscribe_response};
use tokio::time::{Instant, Sleep};
use tonic::Status;

use crate::domain::error::shown;
use crate::domain::time::{now_micros, timestamp};
use crate::events::feed::filter::Filter;
use crate::events::feed::hub::{Batch, Head, Hub, settle_pause};
use crate::events::feed::mailbox::{Delivery, Mail, Mailbox};
use crate::events::feed::{Position, StoredEvent};

/// One subscriber's progress through the feed.
pub(crate) struct Subscription {
    hub: Arc<Hub>,
    /// Its place on the hub, given back when the subscription ends.
    id: u64,
    feed_id: String,
    filter: Arc<Filter>,
    mailbox: Arc<Mailbox>,
    /// Every event up to here has been delivered or filtered out.
    cursor: Position,
    /// While `cursor` is below it, the gap is read from the database.
    caught_up_at: Position,
    /// A delivery taken while behind, applied once the gap before it is read.
    waiting: Option<Delivery>,
    /// Pause before reading the gap again when it was not yet readable.
    settle: Duration,
    /// What heartbeats report as scanned: the cursor for callers spanning tenants, the
    /// position of the last event delivered for a tenant (the position scanned past would
    /// reveal other tenants' writes).
    shown: Position,
    /// The tenant's head as last known, for heartbeats while the database is away.
    known_head: Head,
    heartbeat_every: Duration,
    next_heartbeat: Instant,
    /// Fires at `next_heartbeat`; kept across waits, so a wake-up for a delivery does not
    /// re-register a timer.
    heartbeat: Pin<Box<Sleep>>,
    /// How long the outbox may be unreadable before the stream ends with UNAVAILABLE.
    unavailable_after: Duration,
}

impl Subscription {
    /// A subscription from `cursor` (exclusive).
    pub fn new(
        hub: Arc<Hub>,
        filter: Filter,
        cursor: Position,
        heartbeat_every: Duration,
        unavailable_after: Duration,
    ) -> Subscription {
        let filter = Arc::new(filter);
        let joined = hub.join(filter.clone());
        Subscription {
            feed_id: hub.reader().feed_id().to_owned(),
            hub,
            id: joined.id,
            filter,
            mailbox: joined.mailbox,
            cursor,
            caught_up_at: joined.tail,
            waiting: None,
            settle: Duration::ZERO,
            shown: cursor,
            known_head: None,
            heartbeat_every,
            next_heartbeat: Instant::now(),
            heartbeat: Box::pin(tokio::time::sleep_until(Instant::now())),
            unavailable_after,
        }
    }

    /// The next messages to send (possibly none); an error ends the stream.
    pub async fn next(&mut self) -> Result<Vec<SubscribeResponse>, Status> {
        let mut out = Vec::new();
        if self.cursor < self.caught_up_at {
            self.catch_up(&mut out).await?;
        } else {
            match self.mailbox.take() {
                Mail::Delivery(delivery) if delivery.after > self.cursor => {
                    // Its batch begins past the cursor (the subscriber joined behind the
                    // hub): read what lies between from the database first.
                    self.caught_up_at = delivery.after;
                    self.waiting = Some(delivery);
                }
                Mail::Delivery(delivery) => self.apply(&delivery.batch, &mut out),
                Mail::Overflowed(until) => self.caught_up_at = self.caught_up_at.max(until),
                Mail::Closed => return Err(shutting_down()),
                Mail::Empty => tokio::select! {
                    () = self.mailbox.arrived() => {}
                    () = self.heartbeat.as_mut() => {}
                },
            }
        }
        if Instant::now() >= self.next_heartbeat {
            out.push(self.heartbeat().await?);
            self.next_heartbeat = Instant::now() + self.heartbeat_every;
            self.heartbeat.as_mut().reset(self.next_heartbeat);
        }
        Ok(out)
    }

    /// Reads one batch of the gap between the cursor and the hub from the database: the
    /// subscriber's tenant's events only, unless it sees every tenant.
    async fn catch_up(&mut self, out: &mut Vec<SubscribeResponse>) -> Result<(), Status> {
        let read = self.hub.read_gap(self.filter.tenant(), self.cursor).await?;
        // Checked after the read: retention records what it deletes before the rows go,
        // so a read that missed deleted rows always sees the mark here.
        let deleted = self.hub.deleted_through().await?;
        if self.cursor < deleted {
            return Err(Status::out_of_range(format!(
                "events through position {} were deleted by this feed's retention before                  this subscription read them; resubscribe with after_position {} to go on                  without them",
                deleted.encode(&self.feed_id),
                deleted.encode(&self.feed_id),
            )));
        }
        let complete = !read.full && !read.unsettled;
        if read.events.is_empty() && !complete {
            // Events wait for an older transaction to end (PostgreSQL): the hub read
            // past them, so they will settle. Read again shortly.
            self.settle = settle_pause(self.settle);
            tokio::select! {
                () = tokio::time::sleep(self.settle) => {}
                () = self.hub.stopped() => return Err(shutting_down()),
            }
            return Ok(());
        }
        self.settle = Duration::ZERO;
        for event in &read.events {
            self.consider(event, out);
        }
        if complete && self.cursor < self.caught_up_at {
            // Every event the hub had read before (the gap) was visible to this read:
            // what it did not return is not of this subscriber's tenant.
            self.cursor = self.caught_up_at;
            if self.filter.caller.is_all_tenants() {
                self.shown = self.cursor;
            }
        }
        if self.cursor >= self.caught_up_at
            && let Some(delivery) = self.waiting.take()
        {
            self.apply(&delivery.batch, out);
        }
        Ok(())
    }

    /// Delivers the events of `batch` past the cursor; the batch's delivery begins at or
    /// before it.
    fn apply(&mut self, batch: &Batch, out: &mut Vec<SubscribeResponse>) {
        for event in &batch.events {
            if event.position > self.cursor {
                self.consider(event, out);
            }
        }
        self.cursor = self.cursor.max(batch.until);
        if self.filter.caller.is_all_tenants() {
            self.shown = self.cursor;
        }
    }

    /// Moves the cursor past `event`, delivering a copy if the filter admits it (the
    /// batch is shared by every subscriber it was delivered to).
    fn consider(&mut self, event: &StoredEvent, out: &mut Vec<SubscribeResponse>) {
        self.cursor = event.position;
        if self.filter.caller.is_all_tenants() {
            self.shown = self.cursor;
        }
        if self.filter.admits(event) {
            self.shown = self.cursor;
            out.push(to_message(event.clone(), &self.feed_id));
        }
    }

    /// A heartbeat; or UNAVAILABLE when the outbox has been unreadable too long.
    async fn heartbeat(&mut self) -> Result<SubscribeResponse, Status> {
        if let Some((failing_for, error)) = self.hub.failing_for()
            && failing_for >= self.unavailable_after
        {
            // Not through `AppError`: the hub logged the fault once, and each of its
            // subscribers repeating it would bury it.
            return Err(Status::unavailable(format!(
                "the event feed has not been able to read its outbox for {}s ({}); \
                 resubscribe from your last position",
                failing_for.as_secs(),
                shown(&error)
            )));
        }
        let head = match self.filter.tenant() {
            None => {
                // Batches it does not want are not delivered: with nothing waiting, it
                // has scanned as far as the hub has read.
                if self.cursor >= self.caught_up_at
                    && self.waiting.is_none()
                    && let Some(through) = self.hub.scanned_through(&self.mailbox)
                {
                    self.cursor = self.cursor.max(through);
                    self.shown = self.cursor;
                }
                self.hub.feed_head()
            }
            Some(tenant) => match self.hub.tenant_head(tenant).await {
                Ok(head) => head,
                // The database is away: the head as last known (or the subscriber's own
                // progress), so heartbeats keep flowing.
                Err(_) => self
                    .known_head
                    .max((self.shown != Position::START).then_some((self.shown, 0))),
            },
        };
        self.known_head = head;
        let (head_position, head_occur_time) = match head {
            Some((position, time)) => (
                position.encode(&self.feed_id),
                (time != 0).then(|| timestamp(time)),
            ),
            None => (String::new(), None),
        };
        Ok(SubscribeResponse {
            kind: Some(subscribe_response::Kind::Heartbeat(Heartbeat {
                head_position,
                head_occur_time,
                server_time: Some(timestamp(now_micros())),
                scanned_position: if self.shown == Position::START {
                    String::new()
                } else {
                    self.shown.encode(&self.feed_id)
                },
            })),
        })
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.leave(self.filter.tenant(), self.id);
    }
}

/// A shutdown is no fault: said to the subscriber, not logged.
fn shutting_down() -> Status {
    Status::unavailable("the server is shutting down; resubscribe from your last position")
}

pub(crate) fn to_message(event: StoredEvent, feed_id: &str) -> SubscribeResponse {
    SubscribeResponse {
        kind: Some(subscribe_response::Kind::Event(Event {
            position: event.position.encode(feed_id),
            payload: Some(prost_types::Any {
                type_url: format!("type.googleapis.com/{}", event.event_type),
                value: event.payload,
            }),
            event_id: event.event_id,
            event_type: event.event_type,
            aggregate_type: event.aggregate_type,
            aggregate_id: event.aggregate_id,
            tenant_id: event.tenant_id,
            occur_time: Some(timestamp(event.occur_time_us)),
            actor: event.actor,
            trace_parent: event.trace_parent,
        })),
    }
}
