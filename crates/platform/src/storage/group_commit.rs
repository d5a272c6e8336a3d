//! Group commit: concurrent requests for the same kind of write are queued and applied
//! by one writer task, as many at a time as are waiting, in one transaction.
//!
//! Under load the per-statement round trips and the commit (on PostgreSQL, a WAL flush)
//! are then paid once per batch instead of once per request; with a single caller a
//! batch holds just that caller's request and nothing waits. A [`BatchWrite`] decides
//! each request's own outcome, so one request's error never becomes another's; a failure
//! of the whole batch (the database) fails each of its requests, none of which was
//! acknowledged.
//!
//! Each batch runs in a span of its own (`group_commit`) linked to the span of every
//! request it serves: a batch serves many traces, and a span has one parent. The requests
//! themselves carry their trace on ([`NewEvent::in_trace`](crate::storage::outbox::NewEvent::in_trace)).
//!
//! Measured: `agilepm.group_commit.batch_size` (requests per batch) and
//! `agilepm.group_commit.queued` (requests waiting for the writer), by writer.

use std::future::Future;
use std::sync::Arc;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, UpDownCounter};
use opentelemetry::trace::{SpanContext, TraceContextExt as _};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::domain::error::{AppError, AppResult};

/// Applies a batch of requests of one kind.
pub trait BatchWrite: Send + Sync + 'static {
    /// What the writer writes, as its metrics name it (`task.estimate`).
    const NAME: &'static str;

    /// One request.
    type Request: Send + Sync + 'static;
    /// What a request gets back.
    type Response: Send + 'static;

    /// Applies `requests` (in arrival order) in one transaction and returns one outcome
    /// per request, in the same order. `Err` fails the whole batch; an
    /// [`AppError::Aborted`] (a lost deadlock or serialization race) is retried.
    fn apply(
        &self,
        requests: &[Self::Request],
    ) -> impl Future<Output = AppResult<Vec<AppResult<Self::Response>>>> + Send;
}

/// Requests waiting beyond this many make callers wait to enqueue (backpressure).
const QUEUE: usize = 4096;

/// Attempts of a batch that lost a race before its callers get ABORTED.
const ATTEMPTS: u32 = 3;

struct Job<W: BatchWrite> {
    request: W::Request,
    reply: oneshot::Sender<AppResult<W::Response>>,
    /// The span of the request that submitted it, for the batch's span to link to.
    submitted_in: SpanContext,
}

/// The queue in front of one writer task.
pub struct GroupCommit<W: BatchWrite> {
    jobs: mpsc::Sender<Job<W>>,
    meters: Meters,
}

impl<W: BatchWrite> Clone for GroupCommit<W> {
    fn clone(&self) -> Self {
        GroupCommit {
            jobs: self.jobs.clone(),
            meters: self.meters.clone(),
        }
    }
}

/// One writer's instruments, labelled with its name.
#[derive(Clone)]
struct Meters {
    batch_size: Histogram<u64>,
    queued: UpDownCounter<i64>,
    labels: [KeyValue; 1],
}

impl Meters {
    fn new(writer: &'static str) -> Meters {
        // The process's meter (`wire::metrics::meter`, a layer above this one).
        let meter = opentelemetry::global::meter("agilepm");
        Meters {
            batch_size: meter
                .u64_histogram("agilepm.group_commit.batch_size")
                .with_description("Requests applied in one group-commit transaction")
                .with_boundaries(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0])
                .build(),
            queued: meter
                .i64_up_down_counter("agilepm.group_commit.queued")
                .with_description("Requests waiting for the group-commit writer")
                .build(),
            labels: [KeyValue::new("writer", writer)],
        }
    }
}

impl<W: BatchWrite> GroupCommit<W> {
    /// Starts the writer task, applying at most `max_batch` requests at a time; it ends
    /// when the last handle is dropped. Must be called inside the tokio runtime.
    pub fn start(writer: W, max_batch: usize) -> GroupCommit<W> {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let meters = Meters::new(W::NAME);
        tokio::spawn(write_batches(
            Arc::new(writer),
            queue,
            max_batch.max(1),
            meters.clone(),
        ));
        GroupCommit { jobs, meters }
    }

    /// Applies `request` in whichever batch it lands and returns its outcome once that
    /// batch has committed.
    pub async fn submit(&self, request: W::Request) -> AppResult<W::Response> {
        let (reply, outcome) = oneshot::channel();
        let stopped = || AppError::Unavailable("the service is shutting down".into());
        self.meters.queued.add(1, &self.meters.labels);
        let submitted_in = tracing::Span::current()
            .context()
            .span()
            .span_context()
            .clone();
        let job = Job {
            request,
            reply,
            submitted_in,
        };
        if self.jobs.send(job).await.is_err() {
            self.meters.queued.add(-1, &self.meters.labels);
            return Err(stopped());
        }
        outcome.await.map_err(|_| stopped())?
    }
}

async fn write_batches<W: BatchWrite>(
    writer: Arc<W>,
    mut queue: mpsc::Receiver<Job<W>>,
    max_batch: usize,
    meters: Meters,
) {
    let mut jobs = Vec::with_capacity(max_batch);
    while queue.recv_many(&mut jobs, max_batch).await > 0 {
        meters.queued.add(-(jobs.len() as i64), &meters.labels);
        meters.batch_size.record(jobs.len() as u64, &meters.labels);
        let span = tracing::info_span!("group_commit", writer = W::NAME, requests = jobs.len());
        let mut requests = Vec::with_capacity(jobs.len());
        let mut replies = Vec::with_capacity(jobs.len());
        for job in jobs.drain(..) {
            if job.submitted_in.is_valid() {
                span.add_link(job.submitted_in);
            }
            requests.push(job.request);
            replies.push(job.reply);
        }
        let outcomes = apply_with_retries(&*writer, &requests)
            .instrument(span)
            .await;
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // A caller that gave up no longer listens; the outcome stands regardless.
            let _ = reply.send(outcome);
        }
    }
}

/// Applies one batch, retrying lost races; one outcome per request.
async fn apply_with_retries<W: BatchWrite>(
    writer: &W,
    requests: &[W::Request],
) -> Vec<AppResult<W::Response>> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match writer.apply(requests).await {
            Ok(outcomes) if outcomes.len() == requests.len() => return outcomes,
            Ok(outcomes) => {
                let error = AppError::Internal(format!(
                    "a batch of {} requests produced {} outcomes",
                    requests.len(),
                    outcomes.len()
                ));
                tracing::error!(%error, "group commit failed");
                return requests.iter().map(|_| Err(error.clone())).collect();
            }
            Err(AppError::Aborted(message)) if attempt < ATTEMPTS => {
                tracing::warn!(attempt, %message, "batch lost a race; retrying");
            }
            Err(error) => {
                tracing::error!(%error, requests = requests.len(), "group commit failed");
                return requests.iter().map(|_| Err(error.clone())).collect();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records the batches it sees; rejects odd numbers on their own.
    #[derive(Default)]
    struct Recorder {
        batches: Mutex<Vec<Vec<u32>>>,
        fail_batches: Mutex<u32>,
    }

    impl BatchWrite for Arc<Recorder> {
        const NAME: &'static str = "test.recorder";
        type Request = u32;
        type Response = u32;

        async fn apply(&self, requests: &[u32]) -> AppResult<Vec<AppResult<u32>>> {
            {
                let mut failing = self.fail_batches.lock().unwrap();
                if *failing > 0 {
                    *failing -= 1;
                    return Err(AppError::Aborted("deadlock".into()));
                }
            }
            self.batches.lock().unwrap().push(requests.to_vec());
            tokio::task::yield_now().await;
            Ok(requests
                .iter()
                .map(|n| {
                    if n % 2 == 0 {
                        Ok(n * 10)
                    } else {
                        Err(AppError::invalid("n", "odd"))
                    }
                })
                .collect())
        }
    }

    #[tokio::test]
    async fn concurrent_requests_share_batches_and_keep_their_own_outcomes() {
        let recorder = Arc::new(Recorder::default());
        let group = GroupCommit::start(recorder.clone(), 8);
        let calls: Vec<_> = (0..40u32)
            .map(|n| {
                let group = group.clone();
                tokio::spawn(async move { (n, group.submit(n).await) })
            })
            .collect();
        for call in calls {
            let (n, outcome) = call.await.unwrap();
            if n % 2 == 0 {
                assert_eq!(outcome, Ok(n * 10));
            } else {
                assert_eq!(outcome, Err(AppError::invalid("n", "odd")));
            }
        }
        let batches = recorder.batches.lock().unwrap();
        let mut seen: Vec<u32> = batches.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(
            seen,
            (0..40).collect::<Vec<_>>(),
            "each request applied once"
        );
        assert!(batches.iter().all(|b| b.len() <= 8), "max_batch respected");
        assert!(batches.len() < 40, "requests were grouped: {batches:?}");
    }

    #[tokio::test]
    async fn a_lost_race_is_retried_and_a_persistent_one_fails_the_batch() {
        let recorder = Arc::new(Recorder::default());
        *recorder.fail_batches.lock().unwrap() = 2;
        let group = GroupCommit::start(recorder.clone(), 8);
        assert_eq!(
            group.submit(2).await,
            Ok(20),
            "retried after two lost races"
        );

        *recorder.fail_batches.lock().unwrap() = ATTEMPTS;
        assert_eq!(
            group.submit(4).await,
            Err(AppError::Aborted("deadlock".into()))
        );
        // The writer goes on after a failed batch.
        assert_eq!(group.submit(6).await, Ok(60));
    }
}
