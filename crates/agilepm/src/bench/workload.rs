//! The yardstick sprint at scale: N committed backlog items with 12 tasks of 12 hours,
//! each task estimated down one hour a day for 12 days by C concurrent clients,
//! interleaved across items. Measures estimate latency, throughput, and reconciliation
//! lag (final estimate acknowledged -> the item's DONE visible on the backlog-item feed).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agilepm_platform::domain::time::{micros, now_micros};
use agilepm_platform::events::follower::{BatchHandler, CheckpointStore, FollowOptions, follow};
use agilepm_platform::wire::client::{PeerChannel, connect_lazy};
use agilepm_proto::backlog::v1::backlog_item_service_client::BacklogItemServiceClient;
use agilepm_proto::backlog::v1::{
    BacklogItemStatus, BacklogItemStatusChanged, PlanBacklogItemRequest, StatusChangeCause,
};
use agilepm_proto::events::v1::event_feed_service_client::EventFeedServiceClient;
use agilepm_proto::events::v1::{Event, SubscribeRequest};
use agilepm_proto::planning::v1::product_service_client::ProductServiceClient;
use agilepm_proto::planning::v1::release_service_client::ReleaseServiceClient;
use agilepm_proto::planning::v1::sprint_service_client::SprintServiceClient;
use agilepm_proto::planning::v1::*;
use agilepm_proto::task::v1::task_service_client::TaskServiceClient;
use agilepm_proto::task::v1::{DefineTaskRequest, EstimateTaskHoursRemainingRequest};
use hdrhistogram::Histogram;
use rand::seq::SliceRandom as _;
use tokio::task::JoinSet;

/// Tasks per item and hours per task (the yardstick).
pub const TASKS: usize = 12;
/// Hours per task, estimated down one a day.
pub const HOURS: i32 = 12;
const TENANT: &str = "bench";

/// What the run measured.
pub struct Outcome {
    /// Estimate latencies in microseconds: from the send when unpaced, from the time the
    /// schedule said to send when paced (so a stall delays the measured sends after it
    /// instead of hiding them: no coordinated omission).
    pub latency: Histogram<u64>,
    /// Wall time of the estimate phase.
    pub elapsed: Duration,
    /// Final estimate acknowledged -> DONE on the feed, per item.
    pub lags: Vec<Duration>,
    /// The first part of each lag: final estimate acknowledged -> the DONE event's
    /// occur time in backlog-item (wall clock; same machine). The rest is feed delivery.
    pub lags_to_event: Vec<Duration>,
    /// Items that ended DONE.
    pub items_done: usize,
    /// DONE transitions seen on the feed (should equal the item count).
    pub done_transitions: usize,
    /// Failed calls.
    pub errors: usize,
}

/// What the workers have done so far, for the progress line.
#[derive(Default)]
struct Progress {
    acked: AtomicU64,
    errors: AtomicU64,
}

/// Prints a progress line every second until aborted: the estimate rate over the last
/// second, estimates so far of `total`, errors, and items DONE of `items`.
async fn report_progress(
    progress: Arc<Progress>,
    done: Arc<Mutex<HashMap<String, Vec<Moment>>>>,
    items: usize,
    total: usize,
) {
    let started = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.tick().await;
    let mut last = 0;
    loop {
        ticks.tick().await;
        let acked = progress.acked.load(Ordering::Relaxed);
        let items_done = done.lock().unwrap_or_else(|e| e.into_inner()).len();
        eprintln!(
            "bench: {:>5.1} s  {:>6} estimates/s  {acked}/{total} estimates  {} errors  {items_done}/{items} items DONE",
            started.elapsed().as_secs_f64(),
            acked - last,
            progress.errors.load(Ordering::Relaxed),
        );
        last = acked;
    }
}

/// A point in time as measured here (monotonic) and as a wall-clock microsecond, which
/// is comparable with the services' event times on the same machine.
type Moment = (Instant, i64);

/// The UTC day `offset` days from today, YYYY-MM-DD.
fn day(offset: i32) -> String {
    (agilepm_platform::domain::time::today_utc() + chrono::TimeDelta::days(i64::from(offset)))
        .to_string()
}

/// A connection of its own to `port`, as a person of the workload's tenant.
pub fn channel(port: u16) -> anyhow::Result<PeerChannel> {
    channel_of(port, TENANT)
}

/// A connection of its own to `port`, as a person of `tenant`.
fn channel_of(port: u16, tenant: &str) -> anyhow::Result<PeerChannel> {
    use agilepm_platform::wire::auth::{Credentials, Role, TokenSpec};
    let token = super::processes::bench_auth().signer()?.mint(
        &TokenSpec::person("bench", tenant, &[Role::ProductOwner, Role::TeamMember]),
        Duration::from_secs(24 * 3600),
    )?;
    connect_lazy(
        &format!("http://127.0.0.1:{port}"),
        Some(Credentials::fixed(&token)?),
    )
}

/// Subscriptions a tenant may hold on one feed (the services' default).
const SUBSCRIBERS_PER_TENANT: usize = 100;

/// `count` idle subscriptions to the feed at `port`: from its head, filtering on a type
/// nothing writes, 100 per tenant (one connection each), the first 100 of the workload's
/// own tenant. Returns once each has had its first message; abort the set to end them.
pub async fn idle_subscribers(port: u16, count: usize) -> anyhow::Result<JoinSet<()>> {
    use agilepm_proto::events::v1::GetFeedHeadRequest;
    use anyhow::Context as _;
    let mut streams = JoinSet::new();
    for (group, first) in (0..count).step_by(SUBSCRIBERS_PER_TENANT).enumerate() {
        let tenant = match group {
            0 => TENANT.to_owned(),
            n => format!("{TENANT}-idle-{n}"),
        };
        let mut client = EventFeedServiceClient::new(channel_of(port, &tenant)?);
        let head = client
            .get_feed_head(GetFeedHeadRequest {})
            .await?
            .into_inner()
            .head_position;
        for _ in first..(first + SUBSCRIBERS_PER_TENANT).min(count) {
            let mut stream = client
                .subscribe(SubscribeRequest {
                    after_position: head.clone(),
                    event_types: vec!["agilepm.none.v1.Nothing".into()],
                    ..Default::default()
                })
                .await?
                .into_inner();
            stream
                .message()
                .await?
                .context("the feed ended before its first heartbeat")?;
            streams.spawn(async move { while let Ok(Some(_)) = stream.message().await {} });
        }
    }
    Ok(streams)
}

/// Ports of the four services, in start-up order.
pub struct Ports {
    /// backlog-item.
    pub backlog_item: u16,
    /// task.
    pub task: u16,
    /// planning.
    pub planning: u16,
}

/// Creates the product, release, sprint and `items` committed items with their tasks;
/// returns the tasks per item.
pub async fn prepare(ports: &Ports, items: usize) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    let rid = || uuid::Uuid::new_v4().to_string();
    let planning = channel(ports.planning)?;
    let product = ProductServiceClient::new(planning.clone())
        .create_product(CreateProductRequest {
            request_id: rid(),
            product: Some(Product {
                name: format!("bench {}", rid()),
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .product
        .unwrap_or_default();
    let release = Release {
        product_id: product.id.clone(),
        name: "R".into(),
        begin_date: day(-30),
        end_date: day(90),
        ..Default::default()
    };
    let release = ReleaseServiceClient::new(planning.clone())
        .schedule_release(ScheduleReleaseRequest {
            request_id: rid(),
            release: Some(release),
        })
        .await?
        .into_inner()
        .release
        .unwrap_or_default();
    let sprint = Sprint {
        product_id: product.id.clone(),
        name: "S".into(),
        begin_date: day(-HOURS),
        end_date: day(1),
        ..Default::default()
    };
    let sprint = SprintServiceClient::new(planning.clone())
        .schedule_sprint(ScheduleSprintRequest {
            request_id: rid(),
            sprint: Some(sprint),
        })
        .await?
        .into_inner()
        .sprint
        .unwrap_or_default();
    let mut backlog = BacklogItemServiceClient::new(channel(ports.backlog_item)?);
    let mut tasks = TaskServiceClient::new(channel(ports.task)?);
    let mut prepared = Vec::new();
    for n in 0..items {
        let request = PlanBacklogItemRequest {
            request_id: rid(),
            product_id: product.id.clone(),
            summary: format!("story {n}"),
            ..Default::default()
        };
        let item = backlog
            .plan_backlog_item(request)
            .await?
            .into_inner()
            .backlog_item
            .unwrap_or_default();
        ReleaseServiceClient::new(planning.clone())
            .schedule_backlog_item_for_release(ScheduleBacklogItemForReleaseRequest {
                release_id: release.id.clone(),
                backlog_item_id: item.id.clone(),
                expected_version: None,
            })
            .await?;
        SprintServiceClient::new(planning.clone())
            .commit_backlog_item_to_sprint(CommitBacklogItemToSprintRequest {
                sprint_id: sprint.id.clone(),
                backlog_item_id: item.id.clone(),
                expected_version: None,
            })
            .await?;
        let mut ids = Vec::new();
        for t in 0..TASKS {
            let request = DefineTaskRequest {
                request_id: rid(),
                backlog_item_id: item.id.clone(),
                name: format!("task {t}"),
                hours_remaining: HOURS,
                ..Default::default()
            };
            ids.push(
                tasks
                    .define_task(request)
                    .await?
                    .into_inner()
                    .task
                    .unwrap_or_default()
                    .id,
            );
        }
        prepared.push((item.id, ids));
    }
    Ok(prepared)
}

/// Runs the estimates with `clients` clients and measures.
pub async fn run(
    ports: &Ports,
    prepared: &[(String, Vec<String>)],
    clients: usize,
    rate: u32,
) -> anyhow::Result<Outcome> {
    // The work, a sprint's days of estimates; within a day the tasks of all items are
    // shuffled so clients interleave across items. A task's estimates are a whole day's
    // work apart, so they reach the service in order. Every estimate is dated today (the
    // server's), so each is its task's latest and moves the totals the coordinator reads.
    let mut work = Vec::new();
    let mut item_of = HashMap::new();
    for (item, tasks) in prepared {
        for task in tasks {
            item_of.insert(task.clone(), item.clone());
        }
    }
    for day in 1..=HOURS {
        let mut today: Vec<(String, i32)> = item_of
            .keys()
            .map(|task| (task.clone(), HOURS - day))
            .collect();
        today.shuffle(&mut rand::rng());
        work.extend(today);
    }
    let work = Arc::new(work);
    let item_of = Arc::new(item_of);
    // Per item: when the final estimate was acknowledged, and when each DONE arrived.
    let acked: Arc<Mutex<HashMap<String, Moment>>> = Arc::default();
    let done: Arc<Mutex<HashMap<String, Vec<Moment>>>> = Arc::default();

    // The reader: DONE transitions on the backlog-item feed, from now on, through the
    // platform's follower (which resumes a subscription that ends, from where it was).
    let mut feed = EventFeedServiceClient::new(channel(ports.backlog_item)?);
    let head = feed
        .get_feed_head(agilepm_proto::events::v1::GetFeedHeadRequest {})
        .await?
        .into_inner()
        .head_position;
    let stop_reading = tokio_util::sync::CancellationToken::new();
    let reader = {
        let handler = DoneReader {
            done: done.clone(),
            seen: Mutex::default(),
        };
        let from = InMemoryCheckpoint(Mutex::new(head));
        let options = FollowOptions {
            event_types: vec!["agilepm.backlog.v1.BacklogItemStatusChanged".into()],
            heartbeat_interval_ms: 200,
            ..FollowOptions::default()
        };
        let stop = stop_reading.clone();
        tokio::spawn(async move { follow(feed, &from, &handler, &options, stop).await })
    };

    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let progress = Arc::new(Progress::default());
    let reporting = tokio::spawn(report_progress(
        progress.clone(),
        done.clone(),
        prepared.len(),
        work.len(),
    ));
    let mut workers = Vec::new();
    for client in 0..clients {
        let mut tasks = TaskServiceClient::new(channel(ports.task)?);
        let (work, next, acked, item_of) =
            (work.clone(), next.clone(), acked.clone(), item_of.clone());
        let progress = progress.clone();
        workers.push(tokio::spawn(async move {
            let mut latency = super::report::histogram();
            let mut errors = 0;
            // Each client sends its share of the target rate on a fixed schedule, the
            // clients' schedules staggered evenly across the period: a steady stream, not
            // bursts of every client at once.
            let mut pace = (rate > 0).then(|| {
                let period = Duration::from_secs_f64(clients as f64 / f64::from(rate));
                let offset = period.mul_f64(client as f64 / clients as f64);
                let mut interval =
                    tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
                // Behind schedule, send at once until caught up: the schedule stays what
                // a steady client would have kept, and latency counts from it.
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                interval
            });
            loop {
                let scheduled = match pace.as_mut() {
                    Some(pace) => Some(pace.tick().await.into_std()),
                    None => None,
                };
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((task, hours)) = work.get(i) else {
                    break;
                };
                let request = EstimateTaskHoursRemainingRequest {
                    id: task.clone(),
                    hours_remaining: *hours,
                    date: String::new(),
                    expected_version: None,
                    view: 0,
                };
                let sent = scheduled.unwrap_or_else(Instant::now);
                match tasks.estimate_task_hours_remaining(request).await {
                    Ok(response) => {
                        let at = Instant::now();
                        latency.saturating_record((at - sent).as_micros() as u64);
                        progress.acked.fetch_add(1, Ordering::Relaxed);
                        let totals = response.into_inner().totals.unwrap_or_default();
                        if totals.hours_remaining == 0 && totals.task_count > 0 {
                            acked
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .insert(item_of[task].clone(), (at, now_micros()));
                        }
                    }
                    Err(status) => {
                        errors += 1;
                        progress.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(%status, "estimate failed");
                    }
                }
            }
            (latency, errors)
        }));
    }
    let mut latency = super::report::histogram();
    let mut errors = 0;
    for worker in workers {
        let (mine, failed) = worker.await?;
        latency.add(&mine)?;
        errors += failed;
    }
    let elapsed = started.elapsed();
    reporting.abort();

    // Wait for every item's DONE (or give up after 60 s), then a little longer to catch
    // any second transition.
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.lock().unwrap_or_else(|e| e.into_inner()).len() < prepared.len()
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_reading.cancel();
    let _ = reader.await;
    let done = done.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let acked = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let (lags, lags_to_event) = done
        .iter()
        .filter_map(|(item, times)| {
            let (seen, occurred) = times.first()?;
            let (ack, ack_wall) = acked.get(item)?;
            let to_event = Duration::from_micros(occurred.saturating_sub(*ack_wall).max(0) as u64);
            Some((seen.saturating_duration_since(*ack), to_event))
        })
        .unzip();
    Ok(Outcome {
        latency,
        elapsed,
        lags,
        lags_to_event,
        items_done: done.len(),
        done_transitions: done.values().map(Vec::len).sum(),
        errors,
    })
}

/// Records each DONE transition the follower hands it, with when it arrived and when it
/// occurred. A batch replayed after a resumed subscription is counted once (by event id),
/// so only a real second transition shows as one.
struct DoneReader {
    done: Arc<Mutex<HashMap<String, Vec<Moment>>>>,
    seen: Mutex<std::collections::HashSet<String>>,
}

impl BatchHandler for DoneReader {
    async fn handle(&self, batch: &[Event]) -> anyhow::Result<()> {
        let at = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        for event in batch {
            let Some(payload) = &event.payload else {
                continue;
            };
            let Ok(change) =
                <BacklogItemStatusChanged as prost::Message>::decode(payload.value.as_slice())
            else {
                continue;
            };
            if change.cause == StatusChangeCause::TaskHours as i32
                && change.new_status == BacklogItemStatus::Done as i32
                && seen.insert(event.event_id.clone())
            {
                let occurred = event.occur_time.as_ref().map_or(0, micros);
                done.entry(change.backlog_item_id)
                    .or_default()
                    .push((at, occurred));
            }
        }
        Ok(())
    }
}

/// The reader's position, kept in memory: the feed's head when the run started.
struct InMemoryCheckpoint(Mutex<String>);

impl CheckpointStore for InMemoryCheckpoint {
    async fn load(&self) -> anyhow::Result<String> {
        Ok(self.0.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    async fn save(&self, position: &str) -> anyhow::Result<()> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = position.to_owned();
        Ok(())
    }
}
