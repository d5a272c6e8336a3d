//! Requests, errors and durations (RED) of every gRPC call a process serves or makes:
//! one histogram per side, `rpc.server.call.duration` and `rpc.client.call.duration` (in
//! seconds), labelled with the service, the method and the gRPC status code. Its count is
//! the request rate; its count with a code other than 0 the error rate, by code.
//!
//! A call ends when its status is known: from the response headers (a trailers-only
//! answer, such as a refusal), or from the trailers at the end of its body; a stream's
//! duration is its lifetime. A response dropped before its status (the client went away,
//! or the server ended the connection) counts as CANCELLED.
//!
//! Written here rather than taken from a crate: the maintained tower/OpenTelemetry
//! middleware measures HTTP, whose status is 200 for nearly every failed gRPC call; the
//! status that matters is in the trailers.

use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use opentelemetry::KeyValue;
use opentelemetry::metrics::Histogram;
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::wire::auth::access;
use crate::wire::metrics::{SECONDS_BUCKETS, meter};

/// Which end of the call this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

/// The label of a method that is not ours: a caller cannot mint new series.
pub(crate) const OTHER: &str = "_OTHER";

/// Infrastructure methods every server answers, labelled by name too.
const INFRASTRUCTURE: &[(&str, &str)] = &[
    ("grpc.health.v1.Health", "Check"),
    ("grpc.health.v1.Health", "Watch"),
    (
        "grpc.reflection.v1.ServerReflection",
        "ServerReflectionInfo",
    ),
    (
        "grpc.reflection.v1alpha.ServerReflection",
        "ServerReflectionInfo",
    ),
];

// Status codes this layer assigns itself.
const UNKNOWN: i64 = 2;
const CANCELLED: i64 = 1;
const UNAVAILABLE: i64 = 14;

static SERVER_DURATION: LazyLock<Histogram<f64>> =
    LazyLock::new(|| duration_histogram("rpc.server.call.duration", "served"));
static CLIENT_DURATION: LazyLock<Histogram<f64>> =
    LazyLock::new(|| duration_histogram("rpc.client.call.duration", "made to peers"));

fn duration_histogram(name: &'static str, whose: &str) -> Histogram<f64> {
    meter()
        .f64_histogram(name)
        .with_unit("s")
        .with_description(format!(
            "Duration of gRPC calls {whose}, by service, method and status code"
        ))
        .with_boundaries(SECONDS_BUCKETS.to_vec())
        .build()
}

/// The service and method labels of a request path `/package.Service/Method`: itself
/// when it names one of ours (or a health or reflection method), `_OTHER` otherwise.
pub(crate) fn method_labels(path: &str) -> (&'static str, &'static str) {
    let Some((service, method)) = path.trim_start_matches('/').split_once('/') else {
        return (OTHER, OTHER);
    };
    access::TABLE
        .iter()
        .map(|(s, m, _)| (*s, *m))
        .chain(INFRASTRUCTURE.iter().copied())
        .find(|(s, m)| *s == service && *m == method)
        .unwrap_or((OTHER, OTHER))
}

/// The `grpc-status` in `headers`, if there is one.
pub(crate) fn status_in(headers: &HeaderMap) -> Option<i64> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// One call being measured, recorded once.
struct Call {
    side: Side,
    started: Instant,
    service: &'static str,
    method: &'static str,
}

impl Call {
    fn record(self, code: i64) {
        let histogram = match self.side {
            Side::Server => &*SERVER_DURATION,
            Side::Client => &*CLIENT_DURATION,
        };
        histogram.record(
            self.started.elapsed().as_secs_f64(),
            &[
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", self.service),
                KeyValue::new("rpc.method", self.method),
                KeyValue::new("rpc.grpc.status_code", code),
            ],
        );
    }
}

/// Measures the calls of the service it wraps: [`RpcMetricsLayer::server`] in a server's
/// stack, [`RpcMetricsLayer::client`] around a channel.
#[derive(Debug, Clone, Copy)]
pub struct RpcMetricsLayer {
    side: Side,
}

impl RpcMetricsLayer {
    /// For calls served.
    pub fn server() -> RpcMetricsLayer {
        RpcMetricsLayer { side: Side::Server }
    }

    /// For calls made.
    pub fn client() -> RpcMetricsLayer {
        RpcMetricsLayer { side: Side::Client }
    }
}

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Metered<S> {
        Metered {
            inner,
            side: self.side,
        }
    }
}

/// A service whose calls are measured.
#[derive(Debug, Clone)]
pub struct Metered<S> {
    inner: S,
    side: Side,
}

impl<S, B, RB> Service<Request<B>> for Metered<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Body<Data = Bytes> + Unpin + Send + 'static,
{
    type Response = Response<MeteredBody<RB>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (service, method) = method_labels(request.uri().path());
        let call = Call {
            side: self.side,
            started: Instant::now(),
            service,
            method,
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            match response.await {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    let call = match status_in(&parts.headers) {
                        // Trailers-only: the status is already here.
                        Some(code) => {
                            call.record(code);
                            None
                        }
                        None => Some(call),
                    };
                    Ok(Response::from_parts(
                        parts,
                        MeteredBody { inner: body, call },
                    ))
                }
                Err(error) => {
                    // A server's stack does not fail; a channel does when the peer
                    // cannot be reached, which its caller sees as UNAVAILABLE.
                    call.record(UNAVAILABLE);
                    Err(error)
                }
            }
        })
    }
}

/// A response body that records its call when the status goes by in the trailers, or
/// when it ends or is dropped without one.
pub struct MeteredBody<B> {
    inner: B,
    call: Option<Call>,
}

impl<B> MeteredBody<B> {
    fn finish(&mut self, code: i64) {
        if let Some(call) = self.call.take() {
            call.record(code);
        }
    }
}

impl<B> Body for MeteredBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.finish(status_in(trailers).unwrap_or(UNKNOWN));
                }
            }
            Poll::Ready(Some(Err(_))) => this.finish(match this.call.as_ref().map(|c| c.side) {
                Some(Side::Client) => UNAVAILABLE,
                _ => UNKNOWN,
            }),
            Poll::Ready(None) => this.finish(UNKNOWN),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        self.finish(CANCELLED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_methods_are_labelled_by_name() {
        assert_eq!(
            method_labels("/agilepm.task.v1.TaskService/EstimateTaskHoursRemaining"),
            ("agilepm.task.v1.TaskService", "EstimateTaskHoursRemaining")
        );
        assert_eq!(
            method_labels("/grpc.health.v1.Health/Check"),
            ("grpc.health.v1.Health", "Check")
        );
        for path in [
            "/agilepm.task.v1.TaskService/Made-Up-1",
            "/evil.Service/x",
            "/",
            "",
            "/grpc.health.v1.Health/Check/extra",
        ] {
            assert_eq!(method_labels(path), (OTHER, OTHER), "{path}");
        }
    }

    #[test]
    fn the_status_is_read_from_grpc_status() {
        let mut headers = HeaderMap::new();
        assert_eq!(status_in(&headers), None);
        headers.insert("grpc-status", "5".parse().unwrap());
        assert_eq!(status_in(&headers), Some(5));
        headers.insert("grpc-status", "five".parse().unwrap());
        assert_eq!(status_in(&headers), None);
    }
}
