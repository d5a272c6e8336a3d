//! `agilepm.events.v1.EventFeedService`: replay from a position, then tail live events,
//! with heartbeats.
//!
//! Memory stays bounded whatever the subscriber does: the stream holds at most one batch
//! of rows, and tonic polls it only as fast as HTTP/2 flow control lets the client
//! receive, so a slow reader slows its own stream and nothing else. Between reads the
//! stream holds no database connection; it waits on the commit notifier, a heartbeat
//! timer and a fallback poll.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agilepm_proto::events::v1::event_feed_service_server::EventFeedService;
use agilepm_proto::events::v1::{
    Event, GetFeedHeadRequest, GetFeedHeadResponse, Heartbeat, SubscribeRequest, SubscribeResponse,
    subscribe_response,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::auth::{Caller, caller};
use crate::db::{Db, Engine};
use crate::error::{AppError, AppResult};
use crate::feed::{OutboxReader, Position, StoredEvent};
use crate::time::{now_micros, timestamp};

/// Tuning of the feed server.
#[derive(Debug, Clone)]
pub struct FeedOptions {
    /// Rows read per query.
    pub batch_size: u32,
    /// How often a caught-up subscriber re-reads even without a notification.
    pub fallback_poll: Duration,
    /// Heartbeat interval when the subscriber does not ask for one.
    pub default_heartbeat: Duration,
    /// Subscriptions open at once on this feed.
    pub max_subscribers: usize,
    /// Subscriptions one tenant may hold open at once (callers spanning tenants count
    /// as one more tenant).
    pub max_subscribers_per_tenant: usize,
}

impl Default for FeedOptions {
    fn default() -> Self {
        FeedOptions {
            batch_size: 500,
            fallback_poll: Duration::from_millis(500),
            default_heartbeat: Duration::from_secs(5),
            max_subscribers: 1000,
            max_subscribers_per_tenant: 100,
        }
    }
}

/// The feed server for one service's outbox.
#[derive(Clone)]
pub struct EventFeed {
    reader: OutboxReader,
    options: FeedOptions,
    subscribers: Arc<Subscribers>,
}

/// Who holds how many subscriptions.
#[derive(Default)]
struct Subscribers {
    by_tenant: Mutex<HashMap<String, usize>>,
}

/// One admitted subscription; its place is given back when the stream ends.
struct Admitted {
    subscribers: Arc<Subscribers>,
    tenant: String,
}

impl Subscribers {
    /// Admits a subscription of `tenant` unless the tenant or the feed holds its maximum.
    fn admit(self: &Arc<Self>, tenant: &str, options: &FeedOptions) -> AppResult<Admitted> {
        let mut by_tenant = self.by_tenant.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = by_tenant.values().sum();
        if total >= options.max_subscribers {
            return Err(AppError::ResourceExhausted(format!(
                "this feed serves {} subscriptions at most; retry later",
                options.max_subscribers
            )));
        }
        let held = by_tenant.entry(tenant.to_owned()).or_default();
        if *held >= options.max_subscribers_per_tenant {
            return Err(AppError::ResourceExhausted(format!(
                "a tenant may hold {} subscriptions of this feed at once; close one first",
                options.max_subscribers_per_tenant
            )));
        }
        *held += 1;
        Ok(Admitted {
            subscribers: self.clone(),
            tenant: tenant.to_owned(),
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut by_tenant = self
            .subscribers
            .by_tenant
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(held) = by_tenant.get_mut(&self.tenant) {
            *held -= 1;
            if *held == 0 {
                by_tenant.remove(&self.tenant);
            }
        }
    }
}

impl EventFeed {
    /// Serves `db`'s outbox. On PostgreSQL also starts, until `shutdown`, announcing this
    /// process's commits to other processes and relaying theirs (every process that
    /// appends events serves its feed, so this is where both belong).
    pub async fn new(
        db: Db,
        options: FeedOptions,
        shutdown: CancellationToken,
    ) -> Result<EventFeed, sqlx::Error> {
        if db.engine() == Engine::Postgres {
            tokio::spawn(crate::feed::notify::announce_postgres(
                db.pool().clone(),
                db.notifier().clone(),
                shutdown.clone(),
            ));
            tokio::spawn(crate::feed::notify::listen_postgres(
                db.url().to_owned(),
                db.notifier().clone(),
                shutdown,
            ));
        }
        Ok(EventFeed {
            reader: OutboxReader::new(db).await?,
            options,
            subscribers: Arc::default(),
        })
    }

    /// The head `caller` may see: the whole feed's for callers spanning tenants, the
    /// newest event of its own tenant for everyone else.
    async fn head(&self, caller: &Caller) -> AppResult<(String, Option<prost_types::Timestamp>)> {
        let tenant = if caller.is_all_tenants() {
            None
        } else {
            Some(caller.tenant()?)
        };
        Ok(match self.reader.head(tenant).await? {
            Some((position, time)) => (
                position.encode(self.reader.feed_id()),
                Some(timestamp(time)),
            ),
            None => (String::new(), None),
        })
    }
}

/// Which events a subscription wants.
struct Filter {
    caller: Caller,
    event_types: HashSet<String>,
    aggregate_ids: HashSet<String>,
}

impl Filter {
    fn admits(&self, event: &StoredEvent) -> bool {
        self.caller.may_see(&event.tenant_id)
            && (self.event_types.is_empty() || self.event_types.contains(&event.event_type))
            && (self.aggregate_ids.is_empty() || self.aggregate_ids.contains(&event.aggregate_id))
    }
}

fn to_message(event: StoredEvent, feed_id: &str) -> SubscribeResponse {
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
        })),
    }
}

type SubscribeStream = tonic::codegen::BoxStream<SubscribeResponse>;

/// Most aggregate ids one subscription may filter on: a subscriber following more
/// subscribes to the whole feed of its tenant and filters itself.
pub const MAX_AGGREGATE_IDS: usize = 1000;
/// Most event types one subscription may filter on (each service has a few dozen).
pub const MAX_EVENT_TYPES: usize = 100;
/// Longest id or event type a filter may name.
const MAX_FILTER_ENTRY: usize = 256;

/// A filter field as a set, refused if it is larger than `max` or holds an entry no id or
/// type can be: a subscription's memory is bounded by what it may ask for.
fn bounded_set(field: &str, values: Vec<String>, max: usize) -> AppResult<HashSet<String>> {
    if values.len() > max {
        return Err(AppError::invalid(
            field,
            format!("at most {max} entries, not {}", values.len()),
        ));
    }
    if let Some(long) = values.iter().find(|v| v.len() > MAX_FILTER_ENTRY) {
        return Err(AppError::invalid(
            field,
            format!(
                "entries are at most {MAX_FILTER_ENTRY} bytes, not {}",
                crate::error::shown(long)
            ),
        ));
    }
    Ok(values.into_iter().collect())
}

/// Waits before reading again while committed events wait for an older transaction to
/// end (PostgreSQL): 1 ms, 2 ms, 3 ms, ... up to 50 ms. Most such transactions last a few
/// milliseconds, so the event follows their end closely; a long one costs a read per
/// 50 ms. (Doubling overshot: a 3 ms wait became 7.)
const SETTLE_RETRY_STEP: Duration = Duration::from_millis(1);
const SETTLE_RETRY_MAX: Duration = Duration::from_millis(50);

#[tonic::async_trait]
impl EventFeedService for EventFeed {
    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<SubscribeStream>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let feed_id = self.reader.feed_id().to_owned();
        let mut cursor = Position::parse("after_position", &request.after_position, &feed_id)?;
        let heartbeat_every = match request.heartbeat_interval_ms {
            0 => self.options.default_heartbeat,
            ms @ 100..=60_000 => Duration::from_millis(ms as u64),
            _ => {
                return Err(AppError::invalid(
                    "heartbeat_interval_ms",
                    "must be 0 or 100 to 60000",
                )
                .into());
            }
        };
        let filter = Filter {
            caller,
            event_types: bounded_set("event_types", request.event_types, MAX_EVENT_TYPES)?,
            aggregate_ids: bounded_set("aggregate_ids", request.aggregate_ids, MAX_AGGREGATE_IDS)?,
        };
        let holder = if filter.caller.is_all_tenants() {
            "*"
        } else {
            filter.caller.tenant()?
        };
        let admitted = self.subscribers.admit(holder, &self.options)?;
        let feed = self.clone();
        let mut wake = feed.reader.db().notifier().subscribe();

        let stream = async_stream::try_stream! {
            // Held for as long as the stream lives: its place is given back when it ends
            // or the client goes away.
            let _admitted = admitted;
            // What heartbeats report as scanned: the cursor for callers spanning tenants,
            // the position of the last event delivered for a tenant.
            let mut shown_cursor = cursor;
            let mut next_heartbeat = Instant::now();
            let mut settle_retry = Duration::ZERO;
            loop {
                // Mark the notifier seen *before* reading, so a commit that lands between
                // the read and the wait still wakes us.
                wake.borrow_and_update();
                let read = feed.reader.read_after(cursor, feed.options.batch_size).await
                    .map_err(|e| Status::from(AppError::from(e)))?;
                let full = read.full;
                settle_retry = if read.unsettled {
                    (settle_retry + SETTLE_RETRY_STEP).min(SETTLE_RETRY_MAX)
                } else {
                    Duration::ZERO
                };
                for event in read.events {
                    cursor = event.position;
                    if filter.admits(&event) {
                        shown_cursor = cursor;
                        yield to_message(event, &feed_id);
                    }
                }
                if filter.caller.is_all_tenants() {
                    shown_cursor = cursor;
                }
                if Instant::now() >= next_heartbeat {
                    let (head_position, head_occur_time) = feed.head(&filter.caller).await?;
                    yield SubscribeResponse {
                        kind: Some(subscribe_response::Kind::Heartbeat(Heartbeat {
                            head_position,
                            head_occur_time,
                            server_time: Some(timestamp(now_micros())),
                            // A tenant is shown positions of its own events only: the
                            // position scanned past reveals other tenants' writes.
                            scanned_position: if shown_cursor == Position::START { String::new() } else { shown_cursor.encode(&feed_id) },
                        })),
                    };
                    next_heartbeat = Instant::now() + heartbeat_every;
                }
                if full {
                    continue;
                }
                let poll_in = if settle_retry.is_zero() { feed.options.fallback_poll } else { settle_retry };
                let poll_at = (Instant::now() + poll_in).min(next_heartbeat);
                tokio::select! {
                    changed = wake.changed() => {
                        if changed.is_err() { break; }
                    }
                    () = tokio::time::sleep_until(poll_at) => {}
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_feed_head(
        &self,
        request: Request<GetFeedHeadRequest>,
    ) -> Result<Response<GetFeedHeadResponse>, Status> {
        let caller = caller(&request)?;
        let (head_position, head_occur_time) = self.head(&caller).await?;
        Ok(Response::new(GetFeedHeadResponse {
            head_position,
            head_occur_time,
        }))
    }
}
