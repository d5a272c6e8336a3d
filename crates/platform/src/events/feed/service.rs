//! `agilepm.events.v1.EventFeedService`: admission of subscribers (bounded per tenant
//! and in total, filters bounded), then each subscription served from the process's
//! [`Hub`](crate::events::feed::hub) (see [`subscription`](crate::events::feed::subscription)).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agilepm_proto::events::v1::event_feed_service_server::EventFeedService;
use agilepm_proto::events::v1::{
    AcknowledgeFeedPositionRequest, AcknowledgeFeedPositionResponse, Event, FeedConsumer,
    ForgetFeedConsumerRequest, ForgetFeedConsumerResponse, GetFeedHeadRequest, GetFeedHeadResponse,
    ListFeedConsumersRequest, ListFeedConsumersResponse, SubscribeRequest, SubscribeResponse,
    subscribe_response,
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::domain::error::{AppError, AppResult};
use crate::domain::service_name::ServiceName;
use crate::domain::time::timestamp;
use crate::events::feed::filter::{Filter, feed_tenant};
use crate::events::feed::hub::{Hub, HubOptions};
use crate::events::feed::meters::FeedMeters;
use crate::events::feed::subscription::Subscription;
use crate::events::feed::{OutboxReader, Position};
use crate::storage::db::{Db, Engine};
use crate::wire::auth::{Caller, caller};

/// Tuning of the feed server.
#[derive(Debug, Clone)]
pub struct FeedOptions {
    /// Rows read per query.
    pub batch_size: u32,
    /// How often a caught-up subscriber re-reads even without a notification.
    pub fallback_poll: Duration,
    /// Heartbeat interval when the subscriber does not ask for one.
    pub default_heartbeat: Duration,
    /// How long one read of the outbox may take before it counts as failed.
    pub read_timeout: Duration,
    /// How long the outbox may stay unreadable before subscribers are ended with
    /// UNAVAILABLE (they get heartbeats meanwhile).
    pub unavailable_after: Duration,
    /// Subscriptions tenants and operators may hold open at once on this feed.
    pub max_subscribers: usize,
    /// Subscriptions one tenant may hold open at once (operators spanning tenants count
    /// as one more tenant).
    pub max_subscribers_per_tenant: usize,
    /// Subscriptions each of agilepm's own services (the coordinator, the notifier) may
    /// hold open at once, one per replica and feed it follows. Reserved apart from
    /// [`FeedOptions::max_subscribers`]: however many tenants and operators fill the
    /// feed, the followers that keep statuses following hours always get in.
    pub max_subscribers_per_service: usize,
    /// The service whose outbox this is, as metrics label it.
    pub service: &'static str,
}

impl Default for FeedOptions {
    fn default() -> Self {
        FeedOptions {
            batch_size: 500,
            fallback_poll: Duration::from_millis(500),
            default_heartbeat: Duration::from_secs(5),
            read_timeout: Duration::from_secs(5),
            unavailable_after: Duration::from_secs(15),
            max_subscribers: 1000,
            max_subscribers_per_tenant: 100,
            max_subscribers_per_service: MAX_SUBSCRIBERS_PER_SERVICE,
            service: "unnamed",
        }
    }
}

/// The feed server for one service's outbox.
#[derive(Clone)]
pub struct EventFeed {
    hub: Arc<Hub>,
    options: FeedOptions,
    subscribers: Arc<Subscribers>,
    meters: FeedMeters,
}

/// Subscriptions reserved for each of agilepm's own services, by default: room for its
/// replicas (each follows a feed with one subscription) and a restart's overlap.
pub const MAX_SUBSCRIBERS_PER_SERVICE: usize = 16;

/// Who holds a subscription, for admission.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Holder {
    /// A tenant's people, by tenant id.
    Tenant(String),
    /// Operators spanning tenants.
    Operators,
    /// One of agilepm's own services, from the reserve.
    Service(ServiceName),
}

/// Who holds how many subscriptions.
struct Subscribers {
    by_holder: Mutex<HashMap<Holder, usize>>,
    meters: FeedMeters,
}

/// One admitted subscription; its place is given back when the stream ends.
struct Admitted {
    subscribers: Arc<Subscribers>,
    holder: Holder,
}

impl Subscribers {
    /// Admits a subscription of `holder` unless it, or the feed's shared pool, holds its
    /// maximum. Services take from their own reserve, never from the shared pool.
    fn admit(self: &Arc<Self>, holder: Holder, options: &FeedOptions) -> AppResult<Admitted> {
        let mut by_holder = self.by_holder.lock().unwrap_or_else(|p| p.into_inner());
        let (bound, refusal) = match &holder {
            Holder::Service(service) => (
                options.max_subscribers_per_service,
                format!(
                    "the {service} service may hold {} subscriptions of this feed at once",
                    options.max_subscribers_per_service
                ),
            ),
            Holder::Tenant(_) | Holder::Operators => {
                let shared: usize = by_holder
                    .iter()
                    .filter(|(h, _)| !matches!(h, Holder::Service(_)))
                    .map(|(_, held)| held)
                    .sum();
                if shared >= options.max_subscribers {
                    return Err(AppError::ResourceExhausted(format!(
                        "this feed serves {} subscriptions at most; retry later",
                        options.max_subscribers
                    )));
                }
                (
                    options.max_subscribers_per_tenant,
                    format!(
                        "a tenant may hold {} subscriptions of this feed at once; close one first",
                        options.max_subscribers_per_tenant
                    ),
                )
            }
        };
        let held = by_holder.entry(holder.clone()).or_default();
        if *held >= bound {
            return Err(AppError::ResourceExhausted(refusal));
        }
        *held += 1;
        self.meters.subscribers(1);
        Ok(Admitted {
            subscribers: self.clone(),
            holder,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut by_holder = self
            .subscribers
            .by_holder
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.subscribers.meters.subscribers(-1);
        if let Some(held) = by_holder.get_mut(&self.holder) {
            *held -= 1;
            if *held == 0 {
                by_holder.remove(&self.holder);
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
    ) -> AppResult<EventFeed> {
        if db.engine() == Engine::Postgres {
            tokio::spawn(crate::events::feed::notify::announce_postgres(
                db.pool().clone(),
                db.notifier().clone(),
                shutdown.clone(),
            ));
            tokio::spawn(crate::events::feed::notify::listen_postgres(
                db.url().to_owned(),
                db.notifier().clone(),
                shutdown.clone(),
            ));
        }
        let hub_options = HubOptions {
            batch_size: options.batch_size,
            fallback_poll: options.fallback_poll,
            read_timeout: options.read_timeout,
        };
        let hub = Hub::start(OutboxReader::new(db).await?, hub_options, shutdown).await?;
        let meters = FeedMeters::new(options.service, &hub);
        Ok(EventFeed {
            hub,
            options,
            subscribers: Arc::new(Subscribers {
                by_holder: Mutex::default(),
                meters: meters.clone(),
            }),
            meters,
        })
    }

    /// The process's one reader of the outbox, for in-process followers (the JetStream
    /// relay).
    pub(crate) fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The head `caller` may see, as the database shows it now: the whole feed's for
    /// callers spanning tenants (unless an operator names one), the newest event of its
    /// own tenant for everyone else.
    async fn head(&self, caller: &Caller) -> AppResult<(String, Option<prost_types::Timestamp>)> {
        let tenant = if caller.is_all_tenants() {
            feed_tenant(caller)
        } else {
            Some(caller.tenant()?)
        };
        Ok(match self.hub.exact_head(tenant).await? {
            Some((position, time)) => (
                position.encode(self.hub.reader().feed_id()),
                Some(timestamp(time)),
            ),
            None => (String::new(), None),
        })
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

/// A consumer's name as `AcknowledgeFeedPosition` takes it.
fn consumer_name(name: &str) -> AppResult<&str> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
    if name.is_empty() || name.len() > 64 || !name.chars().all(allowed) {
        return Err(AppError::invalid(
            "consumer",
            "must be 1 to 64 characters of a-z, 0-9, '.', '_' and '-'",
        ));
    }
    Ok(name)
}

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
                crate::domain::error::shown(long)
            ),
        ));
    }
    Ok(values.into_iter().collect())
}

#[tonic::async_trait]
impl EventFeedService for EventFeed {
    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<SubscribeStream>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let cursor = Position::parse(
            "after_position",
            &request.after_position,
            self.hub.reader().feed_id(),
        )?;
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
        let holder = match filter.caller.service_name() {
            Some(service) => Holder::Service(service),
            None if filter.caller.is_all_tenants() => Holder::Operators,
            None => Holder::Tenant(filter.caller.tenant()?.to_owned()),
        };
        let admitted = self.subscribers.admit(holder, &self.options)?;
        let mut subscription = Subscription::new(
            self.hub.clone(),
            filter,
            cursor,
            heartbeat_every,
            self.options.unavailable_after,
        );
        let meters = self.meters.clone();
        let stream = async_stream::try_stream! {
            // Held for as long as the stream lives: its place is given back when it ends
            // or the client goes away.
            let _admitted = admitted;
            loop {
                for message in subscription.next().await? {
                    if let Some(subscribe_response::Kind::Event(Event { occur_time: Some(occurred), .. })) = &message.kind {
                        meters.delivered(occurred);
                    }
                    yield message;
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }

    async fn acknowledge_feed_position(
        &self,
        request: Request<AcknowledgeFeedPositionRequest>,
    ) -> Result<Response<AcknowledgeFeedPositionResponse>, Status> {
        let request = request.into_inner();
        let consumer = consumer_name(&request.consumer)?;
        let position = Position::parse("position", &request.position, self.hub.reader().feed_id())?;
        crate::events::feed::retention::acknowledge(self.hub.reader().db(), consumer, position)
            .await?;
        Ok(Response::new(AcknowledgeFeedPositionResponse {}))
    }

    async fn list_feed_consumers(
        &self,
        _request: Request<ListFeedConsumersRequest>,
    ) -> Result<Response<ListFeedConsumersResponse>, Status> {
        let reader = self.hub.reader();
        let consumers = crate::events::feed::retention::consumers(reader.db())
            .await?
            .into_iter()
            .map(|(consumer, position, update_time_us)| FeedConsumer {
                consumer,
                position: position.encode(reader.feed_id()),
                update_time: Some(timestamp(update_time_us)),
            })
            .collect();
        Ok(Response::new(ListFeedConsumersResponse { consumers }))
    }

    async fn forget_feed_consumer(
        &self,
        request: Request<ForgetFeedConsumerRequest>,
    ) -> Result<Response<ForgetFeedConsumerResponse>, Status> {
        let consumer = consumer_name(&request.get_ref().consumer)?;
        crate::events::feed::retention::forget(self.hub.reader().db(), consumer).await?;
        Ok(Response::new(ForgetFeedConsumerResponse {}))
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
