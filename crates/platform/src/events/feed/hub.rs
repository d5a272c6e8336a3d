//! One reader of the outbox per process, however many subscribe.
//!
//! The hub's tail task reads what committed after the last event it read (woken by the
//! commit notifier, or by a fallback poll for commits nobody announced) and delivers
//! each read as a [`Batch`] to the [`Mailbox`] of every subscriber whose filter may want
//! it: the whole read to subscribers that see every tenant, a batch of its tenant's
//! events to a tenant's. A subscriber is woken only for batches it may want, so a
//! thousand idle subscribers cost the database what one does, and their process next to
//! nothing. A
//! subscriber behind the hub — resuming from an old position, or fallen more than
//! [`BATCHES_KEPT`] batches behind because its client reads slowly — reads the gap from
//! the database itself, holding one of a few catch-up permits
//! ([`FEED_READ_CONNECTIONS`](crate::events::feed::reader::FEED_READ_CONNECTIONS) - 1) while it reads; the
//! feed has connections of its own, so no number of subscribers can take the ones the
//! service's writes need.
//!
//! # Why no event is skipped
//!
//! Each delivery says where the subscriber's previous one ended ([`Delivery::after`]);
//! between the two lies nothing the subscriber wants (the hub saw it all). The hub reads
//! with the same gap-safe read as everyone ([`OutboxReader`]). A subscriber applies a
//! delivery only when its own cursor is at or past the delivery's start; otherwise (its
//! queue overflowed, or it joined behind) it first reads the gap from the database. Its
//! cursor only ever moves to a position some gap-safe read reached.
//!
//! # When the database is away
//!
//! The hub retries with a growing pause and remembers since when it fails. Subscribers go
//! on receiving heartbeats (their heads come from memory), and a subscriber is ended
//! with UNAVAILABLE once the outbox has been unreadable for
//! [`FeedOptions::unavailable_after`](super::FeedOptions), so that it resubscribes
//! (elsewhere, or later) instead of waiting in silence.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::domain::error::{AppError, AppResult, shown};
use crate::events::feed::filter::Filter;
use crate::events::feed::mailbox::{Delivery, Mailbox};
use crate::events::feed::reader::FEED_READ_CONNECTIONS;
use crate::events::feed::{OutboxReader, Position, Read, StoredEvent};

/// Deliveries a subscriber's mailbox holds that it has not taken yet. A subscriber
/// further behind reads from the database instead. Batches are shared between the
/// subscribers they are delivered to.
pub const BATCHES_KEPT: usize = 128;

/// Tenants whose newest event the hub remembers; past this the memory is dropped and
/// refilled from the database as subscribers ask.
const TENANT_HEADS_KEPT: usize = 100_000;

/// What the hub read in one go, or a tenant's part of it.
#[derive(Debug)]
pub struct Batch {
    /// The position of the last event the hub read.
    pub until: Position,
    /// The events, in feed order.
    pub events: Vec<StoredEvent>,
    /// The event types among them, each once.
    pub event_types: Vec<String>,
}

impl Batch {
    /// A batch of `events`, read through `until`.
    pub fn new(until: Position, events: Vec<StoredEvent>) -> Batch {
        let mut event_types: Vec<String> = Vec::new();
        for event in &events {
            if !event_types.contains(&event.event_type) {
                event_types.push(event.event_type.clone());
            }
        }
        Batch {
            until,
            events,
            event_types,
        }
    }
}

/// One subscriber as the hub sees it.
struct Slot {
    id: u64,
    filter: Arc<Filter>,
    mailbox: Arc<Mailbox>,
    /// Where its last delivery ended, or where it joined.
    last_until: Position,
}

impl Slot {
    /// Delivers `batch` if the subscriber may want it.
    fn offer(&mut self, batch: &Arc<Batch>) {
        if self.filter.may_admit_any(batch) {
            self.mailbox.deliver(
                Delivery {
                    after: self.last_until,
                    batch: batch.clone(),
                },
                BATCHES_KEPT,
            );
            self.last_until = batch.until;
        }
    }
}

/// How the hub reads.
#[derive(Debug, Clone, Copy)]
pub struct HubOptions {
    /// Rows read per query.
    pub batch_size: u32,
    /// How often the tail is read without a commit notification.
    pub fallback_poll: Duration,
    /// How long one read of the outbox may take before it counts as failed.
    pub read_timeout: Duration,
}

/// The newest event a tenant can see: its position and time, `None` before its first.
pub type Head = Option<(Position, i64)>;

/// What the tail reader knows, and whom it delivers to (one lock: a subscriber joins
/// exactly between two deliveries).
struct Tail {
    /// The last event read (or where reading began).
    position: Position,
    /// Its time (µs since the epoch); 0 before the first event.
    occur_time_us: i64,
    /// The newest event of each tenant seen, or looked up, since the hub started.
    tenant_heads: HashMap<String, Head>,
    /// Since when reads fail, and the last failure.
    failing: Option<(Instant, String)>,
    /// Subscribers of one tenant, by tenant.
    tenant_subscribers: HashMap<String, Vec<Slot>>,
    /// Subscribers seeing every tenant.
    all_subscribers: Vec<Slot>,
    next_slot: u64,
    /// The hub has stopped: new subscribers find their mailbox closed.
    stopped: bool,
}

/// The process's one reader of its outbox, and the channel it publishes on.
pub struct Hub {
    reader: OutboxReader,
    options: HubOptions,
    tail: Mutex<Tail>,
    catch_up: Semaphore,
    stopped: CancellationToken,
}

/// A subscriber's place on the hub: its mailbox, and where its first delivery will begin.
pub struct Joined {
    /// Its id, to leave with.
    pub id: u64,
    /// Where the hub leaves its batches.
    pub mailbox: Arc<Mailbox>,
    /// The hub's tail when it joined: events up to here are read from the database.
    pub tail: Position,
}

impl Hub {
    /// Starts reading the outbox after its current head, until `shutdown`.
    pub async fn start(
        reader: OutboxReader,
        options: HubOptions,
        shutdown: CancellationToken,
    ) -> AppResult<Arc<Hub>> {
        let head = tokio::time::timeout(options.read_timeout, reader.head(None))
            .await
            .map_err(|_| AppError::Unavailable("the outbox's head cannot be read".into()))??;
        let (position, occur_time_us) = head.unwrap_or((Position::START, 0));
        let hub = Arc::new(Hub {
            reader,
            options,
            tail: Mutex::new(Tail {
                position,
                occur_time_us,
                tenant_heads: HashMap::new(),
                failing: None,
                tenant_subscribers: HashMap::new(),
                all_subscribers: Vec::new(),
                next_slot: 0,
                stopped: false,
            }),
            catch_up: Semaphore::new(FEED_READ_CONNECTIONS.saturating_sub(1).max(1) as usize),
            stopped: shutdown.child_token(),
        });
        tokio::spawn(hub.clone().follow_tail(shutdown));
        Ok(hub)
    }

    /// The reader, for the feed's id.
    pub fn reader(&self) -> &OutboxReader {
        &self.reader
    }

    fn tail(&self) -> MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins as a subscriber with `filter`.
    pub fn join(&self, filter: Arc<Filter>) -> Joined {
        // Under the lock publishing takes too: deliveries begin at the tail seen here.
        let mut tail = self.tail();
        let mailbox = Arc::new(Mailbox::default());
        if tail.stopped {
            mailbox.close();
        }
        let id = tail.next_slot;
        tail.next_slot += 1;
        let position = tail.position;
        let slot = Slot {
            id,
            mailbox: mailbox.clone(),
            last_until: position,
            filter: filter.clone(),
        };
        match filter.tenant() {
            None => tail.all_subscribers.push(slot),
            Some(tenant) => tail
                .tenant_subscribers
                .entry(tenant.to_owned())
                .or_default()
                .push(slot),
        }
        Joined {
            id,
            mailbox,
            tail: position,
        }
    }

    /// Removes the subscriber `id` of `tenant` (or of every tenant).
    pub fn leave(&self, tenant: Option<&str>, id: u64) {
        let mut tail = self.tail();
        match tenant {
            None => tail.all_subscribers.retain(|slot| slot.id != id),
            Some(tenant) => {
                if let Some(slots) = tail.tenant_subscribers.get_mut(tenant) {
                    slots.retain(|slot| slot.id != id);
                    if slots.is_empty() {
                        tail.tenant_subscribers.remove(tenant);
                    }
                }
            }
        }
    }

    /// The hub's tail, if `mailbox` holds nothing: then its subscriber has been given
    /// everything it wants up to there. (Deliveries are made under the same lock.)
    pub fn scanned_through(&self, mailbox: &Mailbox) -> Option<Position> {
        let tail = self.tail();
        mailbox.is_empty().then_some(tail.position)
    }

    /// Resolves when the hub has stopped (the process shuts down).
    pub async fn stopped(&self) {
        self.stopped.cancelled().await;
    }

    /// How long the outbox has been unreadable, and why; `None` while reads succeed.
    pub fn failing_for(&self) -> Option<(Duration, String)> {
        self.tail()
            .failing
            .as_ref()
            .map(|(since, error)| (since.elapsed(), error.clone()))
    }

    /// The newest event read by the hub: the head of the whole feed as this process knows
    /// it, without a query.
    pub fn feed_head(&self) -> Head {
        let tail = self.tail();
        (tail.position != Position::START).then_some((tail.position, tail.occur_time_us))
    }

    /// The newest event of `tenant`: from memory, or read once from the database and
    /// kept up to date from then on.
    pub async fn tenant_head(&self, tenant: &str) -> AppResult<Head> {
        if let Some(head) = self.tail().tenant_heads.get(tenant) {
            return Ok(*head);
        }
        let looked_up = self.exact_head(Some(tenant)).await?;
        let mut tail = self.tail();
        if tail.tenant_heads.len() >= TENANT_HEADS_KEPT {
            tail.tenant_heads.clear();
        }
        // The hub may have read a newer event meanwhile: the later position wins.
        let head = tail.tenant_heads.entry(tenant.to_owned()).or_insert(None);
        *head = (*head).max(looked_up);
        Ok(*head)
    }

    /// The head as the database shows it now (of `tenant`'s events only, when given),
    /// read under a catch-up permit.
    pub async fn exact_head(&self, tenant: Option<&str>) -> AppResult<Head> {
        let _permit = self.catch_up_permit().await?;
        self.bounded(self.reader.head(tenant)).await
    }

    /// Up to a batch of events after `after` (of `tenant` only, when given), read by a
    /// subscriber catching up, under a catch-up permit.
    pub async fn read_gap(&self, tenant: Option<&str>, after: Position) -> AppResult<Read> {
        let _permit = self.catch_up_permit().await?;
        self.bounded(
            self.reader
                .read_after_of(tenant, after, self.options.batch_size),
        )
        .await
    }

    /// The position every event through which retention has deleted, read under a
    /// catch-up permit.
    pub async fn deleted_through(&self) -> AppResult<Position> {
        let _permit = self.catch_up_permit().await?;
        self.bounded(crate::events::feed::retention::deleted_through(
            self.reader.pool(),
        ))
        .await
    }

    async fn catch_up_permit(&self) -> AppResult<tokio::sync::SemaphorePermit<'_>> {
        self.catch_up
            .acquire()
            .await
            .map_err(|_| AppError::Unavailable("the event feed is shutting down".into()))
    }

    /// `read` bounded by the read timeout; a database error or timeout is UNAVAILABLE.
    async fn bounded<T>(&self, read: impl Future<Output = Result<T, sqlx::Error>>) -> AppResult<T> {
        match tokio::time::timeout(self.options.read_timeout, read).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(match AppError::from(error) {
                AppError::Internal(message) => AppError::Internal(message),
                other => AppError::Unavailable(format!("the outbox cannot be read: {other}")),
            }),
            Err(_) => Err(AppError::Unavailable(format!(
                "the outbox did not answer within {:?}",
                self.options.read_timeout
            ))),
        }
    }

    /// Reads the tail and publishes it until `shutdown`.
    async fn follow_tail(self: Arc<Self>, shutdown: CancellationToken) {
        let mut wake = self.reader.db().notifier().subscribe();
        let mut retry = RetryPause::default();
        loop {
            // Mark the notifier seen *before* reading, so a commit that lands between the
            // read and the wait still wakes us.
            wake.borrow_and_update();
            let after = self.tail().position;
            let pause = match self
                .bounded(self.reader.read_after(after, self.options.batch_size))
                .await
            {
                Ok(read) => {
                    self.recovered();
                    let (full, unsettled) = (read.full, read.unsettled);
                    self.publish(read.events);
                    if full {
                        continue;
                    }
                    retry.settle(unsettled, self.options.fallback_poll)
                }
                Err(error) => {
                    self.failed(&error);
                    retry.failure()
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                changed = wake.changed(), if !retry.failing() => if changed.is_err() { break },
                () = tokio::time::sleep(pause) => {}
            }
        }
        {
            let mut tail = self.tail();
            tail.stopped = true;
            let tail = &*tail;
            for slot in tail
                .all_subscribers
                .iter()
                .chain(tail.tenant_subscribers.values().flatten())
            {
                slot.mailbox.close();
            }
        }
        self.stopped.cancel();
        self.reader.close().await;
    }

    /// Delivers the events just read (nothing when there are none).
    fn publish(&self, events: Vec<StoredEvent>) {
        let Some(last) = events.last() else { return };
        let until = last.position;
        let mut tail = self.tail();
        tail.position = until;
        tail.occur_time_us = last.occur_time_us;
        let mut by_tenant: HashMap<&str, Vec<StoredEvent>> = HashMap::new();
        for event in &events {
            // Only tenants already remembered: a tenant nobody asked about is looked up
            // when asked.
            if let Some(head) = tail.tenant_heads.get_mut(&event.tenant_id) {
                *head = Some((event.position, event.occur_time_us));
            }
            if tail.tenant_subscribers.contains_key(&event.tenant_id) {
                by_tenant
                    .entry(&event.tenant_id)
                    .or_default()
                    .push(event.clone());
            }
        }
        // A tenant without events in the read is offered nothing: nothing of it lies
        // between its subscribers' last deliveries and this read's end.
        for (tenant, events) in by_tenant {
            let batch = Arc::new(Batch::new(until, events));
            if let Some(slots) = tail.tenant_subscribers.get_mut(tenant) {
                for slot in slots {
                    slot.offer(&batch);
                }
            }
        }
        if !tail.all_subscribers.is_empty() {
            let batch = Arc::new(Batch::new(until, events));
            for slot in &mut tail.all_subscribers {
                slot.offer(&batch);
            }
        }
    }

    fn failed(&self, error: &AppError) {
        let mut tail = self.tail();
        if tail.failing.is_none() {
            tracing::error!(error = %shown(&error.to_string()), "the event feed cannot read its outbox; retrying");
            tail.failing = Some((Instant::now(), error.to_string()));
        } else if let Some((_, last)) = tail.failing.as_mut() {
            *last = error.to_string();
        }
    }

    fn recovered(&self) {
        if let Some((since, _)) = self.tail().failing.take() {
            tracing::info!(after = ?since.elapsed(), "the event feed reads its outbox again");
        }
    }
}

/// How long the tail reader waits before reading again.
#[derive(Default)]
struct RetryPause {
    /// Committed events wait behind an older transaction (PostgreSQL).
    settle: Duration,
    /// Reads fail.
    failure: Duration,
}

/// While committed events wait for an older transaction to end (PostgreSQL), the tail is
/// read again after 1 ms, 2 ms, 3 ms, ... up to 50 ms: most such transactions last a few
/// milliseconds, so the event follows their end closely, and a long one costs a read per
/// 50 ms. (Doubling overshot: a 3 ms wait became 7.)
const SETTLE_STEP: Duration = Duration::from_millis(1);
const SETTLE_MAX: Duration = Duration::from_millis(50);
/// After a failed read: 100 ms, doubling up to 2 s.
const FAILURE_FIRST: Duration = Duration::from_millis(100);
const FAILURE_MAX: Duration = Duration::from_secs(2);

impl RetryPause {
    /// After a successful read: soon if events wait to settle, else the fallback poll.
    fn settle(&mut self, unsettled: bool, fallback_poll: Duration) -> Duration {
        self.failure = Duration::ZERO;
        if unsettled {
            self.settle = (self.settle + SETTLE_STEP).min(SETTLE_MAX);
            self.settle
        } else {
            self.settle = Duration::ZERO;
            fallback_poll
        }
    }

    /// After a failed read: a growing pause, during which commits do not wake the reader.
    fn failure(&mut self) -> Duration {
        self.failure = (self.failure * 2).clamp(FAILURE_FIRST, FAILURE_MAX);
        self.failure
    }

    fn failing(&self) -> bool {
        !self.failure.is_zero()
    }
}

/// The settle pause for a subscriber catching up, shared with the tail reader's rule.
pub(crate) fn settle_pause(previous: Duration) -> Duration {
    (previous + SETTLE_STEP).min(SETTLE_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_pause_longer_each_time_up_to_a_bound_and_success_resets() {
        let mut pause = RetryPause::default();
        assert_eq!(pause.failure(), FAILURE_FIRST);
        assert_eq!(pause.failure(), FAILURE_FIRST * 2);
        for _ in 0..10 {
            pause.failure();
        }
        assert_eq!(pause.failure(), FAILURE_MAX);
        assert!(pause.failing());
        let poll = Duration::from_millis(500);
        assert_eq!(pause.settle(false, poll), poll);
        assert!(!pause.failing());
        assert_eq!(pause.settle(true, poll), SETTLE_STEP);
        assert_eq!(pause.settle(true, poll), SETTLE_STEP * 2);
    }
}
