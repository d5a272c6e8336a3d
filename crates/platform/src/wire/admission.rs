//! Which calls a server takes on, and for how long: a call is refused at once when the
//! service's database is away (UNAVAILABLE, instead of waiting out a pool timeout) or
//! when the server already handles its maximum of calls (RESOURCE_EXHAUSTED, instead of
//! queueing), and a call still unanswered at the server's default deadline is answered
//! DEADLINE_EXCEEDED (a caller's shorter deadline wins; tonic enforces it).
//!
//! Health and reflection are always admitted: they are how operators find out why the
//! rest is not.
//!
//! A call counts from its arrival until its response headers: a stream (the event feed's
//! `Subscribe`) counts until it is open, not while it runs; subscriptions have bounds of
//! their own. So the cap bounds what calls waiting for their request body, the database
//! or a peer can hold, whatever the number of connections they came on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tokio::sync::Semaphore;
use tonic::Status;
use tower::{Layer, Service};

use crate::domain::error::{AppError, retry_later};

/// Whether the service's database answers, as last probed (see `server::watch_database`).
#[derive(Clone, Debug)]
pub struct Readiness(Arc<AtomicBool>);

impl Default for Readiness {
    fn default() -> Self {
        Readiness(Arc::new(AtomicBool::new(true)))
    }
}

impl Readiness {
    /// Whether calls that need the database can be served.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Records the outcome of a probe.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }
}

/// Wraps a server's routes in [`Admitted`].
#[derive(Clone)]
pub struct AdmissionLayer {
    readiness: Readiness,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    default_deadline: Duration,
}

impl AdmissionLayer {
    /// Admits at most `max_in_flight` calls at once, none while `readiness` says the
    /// database is away, each answered within `default_deadline`.
    pub fn new(
        readiness: Readiness,
        max_in_flight: usize,
        default_deadline: Duration,
    ) -> AdmissionLayer {
        AdmissionLayer {
            readiness,
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            default_deadline,
        }
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = Admitted<S>;

    fn layer(&self, inner: S) -> Admitted<S> {
        Admitted {
            inner,
            layer: self.clone(),
        }
    }
}

/// A service whose calls are admitted first and bounded in time.
#[derive(Clone)]
pub struct Admitted<S> {
    inner: S,
    layer: AdmissionLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> Service<Request<B>> for Admitted<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<RB>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if !request.uri().path().starts_with("/agilepm.") {
            return Box::pin(self.inner.call(request));
        }
        let layer = &self.layer;
        if !layer.readiness.is_ready() {
            // Logged once, by the probe that found the database away.
            return refuse(retry_later(
                "this service's database does not answer; retry shortly",
            ));
        }
        let Ok(permit) = layer.in_flight.clone().try_acquire_owned() else {
            return refuse(
                AppError::ResourceExhausted(format!(
                    "the server is handling {} calls, its maximum; retry with backoff",
                    layer.max_in_flight
                ))
                .into(),
            );
        };
        let deadline = layer.default_deadline;
        let call = self.inner.call(request);
        Box::pin(async move {
            let answered = tokio::time::timeout(deadline, call).await;
            drop(permit);
            match answered {
                Ok(result) => result,
                Err(_) => Ok(Status::deadline_exceeded(format!(
                    "no answer within the server's default deadline of {deadline:?}; \
                     set a deadline of your own or retry"
                ))
                .into_http()),
            }
        })
    }
}

/// Answers at once with `status`.
fn refuse<RB: Default + Send + 'static, E: Send + 'static>(
    status: Status,
) -> BoxFuture<Result<Response<RB>, E>> {
    Box::pin(std::future::ready(Ok(status.into_http())))
}
