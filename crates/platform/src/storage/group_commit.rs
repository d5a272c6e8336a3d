//! Group commit: concurrent requests for the same kind of write are queued and applied
//! by one writer task, as many at a time as are waiting, in one transaction.
//!
//! Under load the per-statement round trips and the commit (on PostgreSQL, a WAL flush)
//! are then paid once per batch instead of once per request; with a single caller a
//! batch holds just that caller's request and nothing waits. A [`BatchWrite`] decides
//! each request's own outcome, so one request's error never becomes another's; a failure
//! of the whole batch (the database) fails each of its requests, none of which was
//! acknowledged.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::domain::error::{AppError, AppResult};

/// Applies a batch of requests of one kind.
pub trait BatchWrite: Send + Sync + 'static {
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
}

/// The queue in front of one writer task.
pub struct GroupCommit<W: BatchWrite> {
    jobs: mpsc::Sender<Job<W>>,
}

impl<W: BatchWrite> Clone for GroupCommit<W> {
    fn clone(&self) -> Self {
        GroupCommit {
            jobs: self.jobs.clone(),
        }
    }
}

impl<W: BatchWrite> GroupCommit<W> {
    /// Starts the writer task, applying at most `max_batch` requests at a time; it ends
    /// when the last handle is dropped. Must be called inside the tokio runtime.
    pub fn start(writer: W, max_batch: usize) -> GroupCommit<W> {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(write_batches(Arc::new(writer), queue, max_batch.max(1)));
        GroupCommit { jobs }
    }

    /// Applies `request` in whichever batch it lands and returns its outcome once that
    /// batch has committed.
    pub async fn submit(&self, request: W::Request) -> AppResult<W::Response> {
        let (reply, outcome) = oneshot::channel();
        let stopped = || AppError::Unavailable("the service is shutting down".into());
        self.jobs
            .send(Job { request, reply })
            .await
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

async fn write_batches<W: BatchWrite>(
    writer: Arc<W>,
    mut queue: mpsc::Receiver<Job<W>>,
    max_batch: usize,
) {
    let mut jobs = Vec::with_capacity(max_batch);
    while queue.recv_many(&mut jobs, max_batch).await > 0 {
        let (requests, replies): (Vec<_>, Vec<_>) =
            jobs.drain(..).map(|job| (job.request, job.reply)).unzip();
        let mut attempt = 0;
        let outcomes = loop {
            attempt += 1;
            match writer.apply(&requests).await {
                Ok(outcomes) if outcomes.len() == requests.len() => break outcomes,
                Ok(outcomes) => {
                    let error = AppError::Internal(format!(
                        "a batch of {} requests produced {} outcomes",
                        requests.len(),
                        outcomes.len()
                    ));
                    tracing::error!(%error, "group commit failed");
                    break requests.iter().map(|_| Err(error.clone())).collect();
                }
                Err(AppError::Aborted(message)) if attempt < ATTEMPTS => {
                    tracing::warn!(attempt, %message, "batch lost a race; retrying");
                }
                Err(error) => {
                    tracing::error!(%error, requests = requests.len(), "group commit failed");
                    break requests.iter().map(|_| Err(error.clone())).collect();
                }
            }
        };
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // A caller that gave up no longer listens; the outcome stands regardless.
            let _ = reply.send(outcome);
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
