//! Which connections are idle: a connection with no call open (unary calls from request
//! to the end of their response, streams for as long as they stream) is idle from the
//! moment its last call ended. [`limits`](crate::wire::limits) closes a connection idle
//! past `idle_connection_timeout`, so a client holding hundreds of connections that only
//! answer pings gives them back (gRPC's `MAX_CONNECTION_IDLE`).
//!
//! Bytes on the wire cannot tell: an idle channel answers the server's keepalive pings,
//! and a feed subscriber receives for hours without sending a byte. So the calls are
//! counted where they are calls: [`IdleTrackingLayer`] finds its connection's
//! [`Activity`] in the request (the accept loop hands it to tonic as connect info) and
//! holds a count for as long as the response body lives.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use tonic::transport::server::TlsConnectInfo;
use tower::{Layer, Service};

/// One connection's open calls, and since when it has had none.
#[derive(Debug)]
pub struct Activity {
    calls: AtomicUsize,
    /// When the count last fell to zero (or the connection was accepted): microseconds
    /// since `epoch`.
    idle_since_us: AtomicU64,
    epoch: Instant,
}

impl Activity {
    /// A connection accepted now, with no call yet.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            calls: AtomicUsize::new(0),
            idle_since_us: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// Since when the connection has had no call open, or `None` while one is.
    pub fn idle_since(&self) -> Option<Instant> {
        if self.calls.load(Ordering::Acquire) > 0 {
            return None;
        }
        let micros = self.idle_since_us.load(Ordering::Acquire);
        Some(self.epoch + std::time::Duration::from_micros(micros))
    }

    fn begin(self: &Arc<Activity>) -> OpenCall {
        self.calls.fetch_add(1, Ordering::AcqRel);
        OpenCall(self.clone())
    }
}

/// A call open on a connection; the connection's count goes down when it drops.
struct OpenCall(Arc<Activity>);

impl Drop for OpenCall {
    fn drop(&mut self) {
        let activity = &self.0;
        // The time first: a reader that sees the count at zero sees this time or later.
        let now = u64::try_from(activity.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        activity.idle_since_us.fetch_max(now, Ordering::AcqRel);
        activity.calls.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the accept loop gives tonic as a connection's info: the stream's own, and the
/// connection's [`Activity`].
#[derive(Debug, Clone)]
pub struct ConnectionInfo<I> {
    /// The underlying stream's connect info (its addresses).
    pub inner: I,
    /// The connection's calls.
    pub activity: Arc<Activity>,
}

/// Counts each call on its connection's [`Activity`] until its response body ends.
#[derive(Debug, Clone, Copy, Default)]
pub struct IdleTrackingLayer;

impl<S> Layer<S> for IdleTrackingLayer {
    type Service = IdleTracked<S>;

    fn layer(&self, inner: S) -> IdleTracked<S> {
        IdleTracked { inner }
    }
}

/// A service whose calls are counted on their connections.
#[derive(Debug, Clone)]
pub struct IdleTracked<S> {
    inner: S,
}

/// The activity of the connection `request` arrived on, plain or over TLS.
fn activity_of<B>(request: &Request<B>) -> Option<Arc<Activity>> {
    type Plain = ConnectionInfo<tonic::transport::server::TcpConnectInfo>;
    let extensions = request.extensions();
    extensions
        .get::<Plain>()
        .map(|info| info.activity.clone())
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<Plain>>()
                .map(|info| info.get_ref().activity.clone())
        })
}

impl<S, B, RB> Service<Request<B>> for IdleTracked<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    RB: Body<Data = Bytes> + Unpin + Send + 'static,
{
    type Response = Response<CallBody<RB>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let open = activity_of(&request).map(|activity| activity.begin());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|inner| CallBody { inner, _open: open }))
        })
    }
}

/// A response body that keeps its call counted as open until it is dropped.
pub struct CallBody<B> {
    inner: B,
    _open: Option<OpenCall>,
}

impl<B> Body for CallBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_idle_from_when_its_last_call_ends() {
        let activity = Activity::new();
        assert!(activity.idle_since().is_some(), "idle from the accept");
        let first = activity.begin();
        let second = activity.begin();
        assert_eq!(activity.idle_since(), None);
        drop(first);
        assert_eq!(activity.idle_since(), None, "one call is still open");
        let before = Instant::now();
        drop(second);
        let since = activity.idle_since().expect("idle once both ended");
        assert!(since + std::time::Duration::from_millis(1) >= before);
    }
}
