//! What one client can hold of a server, bounded, and refused promptly past the bound:
//! connections, streams per connection, requests in progress per connection, header
//! size, and how long a unary call may run when its caller set no deadline.
//!
//! A connection past the cap is accepted and closed at once (the client sees the
//! connection refused, not a hang), a connection that sends nothing is closed after the
//! first-bytes timeout (so idle sockets cannot hold the cap), and an accept error such as
//! running out of file descriptors pauses the accept loop instead of spinning a core.
//!
//! One peer address holds at most `max_connections_per_peer` of the cap, so one client
//! cannot take them all; a connection with no call open for `idle_connection_timeout`
//! is closed ([`idle`](crate::wire::idle)), so held connections come back; and a few
//! connections beyond the cap are kept for the host itself (127.0.0.1 and ::1, where the
//! container's health probe connects from, exempt from the per-peer share), so a full
//! server still answers its probe and stays on its load balancer.

use std::collections::HashMap;
use std::future::Future as _;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use clap::Args;
use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

use crate::wire::idle::{Activity, ConnectionInfo};

/// The bounds a server enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Open connections at once.
    pub max_connections: usize,
    /// Open connections one peer address may hold at once.
    pub max_connections_per_peer: usize,
    /// How long a connection with no call open is kept before it is closed.
    pub idle_connection_timeout: Duration,
    /// HTTP/2 streams (calls) open at once on one connection.
    pub max_streams_per_connection: u32,
    /// Calls being handled at once on one connection; more are refused at once with
    /// RESOURCE_EXHAUSTED instead of queueing.
    pub max_calls_per_connection: usize,
    /// Calls being handled at once on the whole server (until their response headers;
    /// see [`admission`](crate::wire::admission)); more are refused at once.
    pub max_calls_in_flight: usize,
    /// How long a new connection may take to send its first bytes (the HTTP/2 preface,
    /// or a TLS hello) before it is closed.
    pub first_bytes_timeout: Duration,
    /// Largest request header block.
    pub max_header_bytes: u32,
    /// Largest request message a service decodes; larger ones are refused before any
    /// handler runs (tonic's OUT_OF_RANGE, naming the size and the limit).
    pub max_request_bytes: usize,
    /// Largest response message a service sends (responses are bounded by page sizes
    /// well below it; this is the backstop).
    pub max_response_bytes: usize,
    /// How long a call may take when its caller set no deadline (a caller's shorter
    /// deadline wins). Streams answer within it and then run on.
    pub default_deadline: Duration,
    /// Event-feed subscriptions open at once.
    pub max_subscribers: usize,
    /// Event-feed subscriptions one tenant may hold open at once.
    pub max_subscribers_per_tenant: usize,
    /// How long the outbox may be unreadable before feed subscribers are ended with
    /// UNAVAILABLE (they receive heartbeats meanwhile).
    pub feed_unavailable_after: Duration,
    /// How long shutdown waits for calls in flight (streams end at once) before the
    /// server stops anyway.
    pub drain_deadline: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 512,
            // An eighth of the cap: a client, or a pod's worth of channels, is served; a
            // client opening hundreds leaves seven eighths to everyone else.
            max_connections_per_peer: 64,
            // gRPC clients reconnect on their next call, so closing an idle connection
            // costs its client one handshake; holding it costs a slot of the cap.
            idle_connection_timeout: Duration::from_secs(300),
            max_streams_per_connection: 256,
            max_calls_per_connection: 256,
            max_calls_in_flight: 2048,
            first_bytes_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            // The largest legitimate request, a feed subscription filtering on 1,000 ids
            // of 256 bytes, is ~260 KiB; a batch of 1,000 estimates far less.
            max_request_bytes: 1024 * 1024,
            max_response_bytes: 16 * 1024 * 1024,
            default_deadline: Duration::from_secs(30),
            max_subscribers: 1000,
            max_subscribers_per_tenant: 100,
            feed_unavailable_after: Duration::from_secs(15),
            // Well inside Kubernetes' default 30 s grace period before SIGKILL.
            drain_deadline: Duration::from_secs(10),
        }
    }
}

/// The limits as flags and environment variables.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Open connections at once; more are closed as they arrive.
    #[arg(long, env = "AGILEPM_MAX_CONNECTIONS", default_value_t = ServerLimits::default().max_connections)]
    pub max_connections: usize,
    /// Open connections one peer address may hold at once; more are closed as they arrive.
    #[arg(long, env = "AGILEPM_MAX_CONNECTIONS_PER_PEER", default_value_t = ServerLimits::default().max_connections_per_peer)]
    pub max_connections_per_peer: usize,
    /// Seconds a connection with no call open is kept before it is closed.
    #[arg(long, env = "AGILEPM_IDLE_CONNECTION_TIMEOUT_SECS", default_value_t = ServerLimits::default().idle_connection_timeout.as_secs())]
    pub idle_connection_timeout_secs: u64,
    /// Calls (HTTP/2 streams) open at once on one connection.
    #[arg(long, env = "AGILEPM_MAX_STREAMS_PER_CONNECTION", default_value_t = ServerLimits::default().max_streams_per_connection)]
    pub max_streams_per_connection: u32,
    /// Calls being handled at once on one connection; more get RESOURCE_EXHAUSTED.
    #[arg(long, env = "AGILEPM_MAX_CALLS_PER_CONNECTION", default_value_t = ServerLimits::default().max_calls_per_connection)]
    pub max_calls_per_connection: usize,
    /// Calls being handled at once on the whole server; more get RESOURCE_EXHAUSTED.
    #[arg(long, env = "AGILEPM_MAX_CALLS_IN_FLIGHT", default_value_t = ServerLimits::default().max_calls_in_flight)]
    pub max_calls_in_flight: usize,
    /// Milliseconds a new connection may take to send its first bytes.
    #[arg(long, env = "AGILEPM_FIRST_BYTES_TIMEOUT_MS", default_value_t = ServerLimits::default().first_bytes_timeout.as_millis() as u64)]
    pub first_bytes_timeout_ms: u64,
    /// Seconds a call may take when its caller set no deadline.
    #[arg(long, env = "AGILEPM_DEFAULT_DEADLINE_SECS", default_value_t = ServerLimits::default().default_deadline.as_secs())]
    pub default_deadline_secs: u64,
    /// Largest request message, in bytes; larger ones get OUT_OF_RANGE.
    #[arg(long, env = "AGILEPM_MAX_REQUEST_BYTES", default_value_t = ServerLimits::default().max_request_bytes)]
    pub max_request_bytes: usize,
    /// Event-feed subscriptions open at once; more get RESOURCE_EXHAUSTED.
    #[arg(long, env = "AGILEPM_MAX_SUBSCRIBERS", default_value_t = ServerLimits::default().max_subscribers)]
    pub max_subscribers: usize,
    /// Event-feed subscriptions one tenant may hold open at once.
    #[arg(long, env = "AGILEPM_MAX_SUBSCRIBERS_PER_TENANT", default_value_t = ServerLimits::default().max_subscribers_per_tenant)]
    pub max_subscribers_per_tenant: usize,
    /// Seconds the outbox may be unreadable before feed subscribers get UNAVAILABLE.
    #[arg(long, env = "AGILEPM_FEED_UNAVAILABLE_AFTER_SECS", default_value_t = ServerLimits::default().feed_unavailable_after.as_secs())]
    pub feed_unavailable_after_secs: u64,
    /// Seconds shutdown waits for calls in flight before stopping anyway.
    #[arg(long, env = "AGILEPM_DRAIN_DEADLINE_SECS", default_value_t = ServerLimits::default().drain_deadline.as_secs())]
    pub drain_deadline_secs: u64,
}

impl LimitArgs {
    /// The limits these flags describe.
    pub fn resolve(&self) -> ServerLimits {
        ServerLimits {
            max_connections: self.max_connections.max(1),
            max_connections_per_peer: self.max_connections_per_peer.max(1),
            idle_connection_timeout: Duration::from_secs(self.idle_connection_timeout_secs.max(1)),
            max_streams_per_connection: self.max_streams_per_connection.max(1),
            max_calls_per_connection: self.max_calls_per_connection.max(1),
            max_calls_in_flight: self.max_calls_in_flight.max(1),
            max_request_bytes: self.max_request_bytes.max(1024),
            first_bytes_timeout: Duration::from_millis(self.first_bytes_timeout_ms.max(100)),
            default_deadline: Duration::from_secs(self.default_deadline_secs.max(1)),
            max_subscribers: self.max_subscribers.max(1),
            max_subscribers_per_tenant: self.max_subscribers_per_tenant.max(1),
            feed_unavailable_after: Duration::from_secs(self.feed_unavailable_after_secs.max(1)),
            drain_deadline: Duration::from_secs(self.drain_deadline_secs),
            ..ServerLimits::default()
        }
    }
}

/// A generated agilepm gRPC server whose message sizes can be bounded: every one is, in
/// one place, as [`GrpcServer::add_service`](crate::runtime::server::GrpcServer::add_service) adds it.
pub trait BoundedMessages {
    /// The server with `limits`' message sizes.
    fn bounded(self, limits: &ServerLimits) -> Self;
}

macro_rules! bounded_messages {
    ($($server:path),* $(,)?) => {
        $(
            impl<T> BoundedMessages for $server {
                fn bounded(self, limits: &ServerLimits) -> Self {
                    self.max_decoding_message_size(limits.max_request_bytes)
                        .max_encoding_message_size(limits.max_response_bytes)
                }
            }
        )*
    };
}

bounded_messages!(
    agilepm_proto::events::v1::event_feed_service_server::EventFeedServiceServer<T>,
    agilepm_proto::backlog::v1::backlog_item_service_server::BacklogItemServiceServer<T>,
    agilepm_proto::task::v1::task_service_server::TaskServiceServer<T>,
    agilepm_proto::coordinator::v1::coordinator_service_server::CoordinatorServiceServer<T>,
    agilepm_proto::notifier::v1::notifier_service_server::NotifierServiceServer<T>,
    agilepm_proto::planning::v1::product_service_server::ProductServiceServer<T>,
    agilepm_proto::planning::v1::use_case_service_server::UseCaseServiceServer<T>,
    agilepm_proto::planning::v1::release_service_server::ReleaseServiceServer<T>,
    agilepm_proto::planning::v1::sprint_service_server::SprintServiceServer<T>,
    agilepm_proto::planning::v1::planning_game_service_server::PlanningGameServiceServer<T>,
    agilepm_proto::planning::v1::report_service_server::ReportServiceServer<T>,
    agilepm_proto::planning::v1::team_service_server::TeamServiceServer<T>,
);

/// How long the accept loop pauses after an accept error (out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Connections beyond the cap kept for the host's own address (its health probe).
const LOOPBACK_RESERVE: usize = 4;

/// A connection that holds one of the server's connection permits (and its share of its
/// peer's) while it lives, is closed if it sends nothing within the first-bytes timeout,
/// and is closed once it has had no call open for the idle timeout.
pub struct Limited<T> {
    inner: T,
    _permit: OwnedSemaphorePermit,
    _peer: PeerShare,
    /// Until the first bytes arrive: when the connection is given up on.
    first_bytes: Option<Pin<Box<Sleep>>>,
    activity: Arc<Activity>,
    idle_timeout: Duration,
    /// When the connection is next checked for idleness.
    idle_check: Pin<Box<Sleep>>,
}

/// How many connections each peer address holds.
type PeerCounts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One connection's share of its peer's count, given back when the connection closes.
struct PeerShare {
    counts: PeerCounts,
    peer: IpAddr,
}

impl PeerShare {
    /// A share for `peer`, if it holds fewer than `max` connections.
    fn take(counts: &PeerCounts, peer: IpAddr, max: usize) -> Option<PeerShare> {
        let mut held = counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = held.entry(peer).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(PeerShare {
            counts: counts.clone(),
            peer,
        })
    }
}

impl Drop for PeerShare {
    fn drop(&mut self) {
        let mut held = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.peer);
            }
        }
    }
}

/// The host's own address: what the container's health probe connects from.
fn is_the_host_itself(peer: IpAddr) -> bool {
    peer == IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        || peer == IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
}

/// Connections accepted on `listener` until `shutdown`, at most `limits.max_connections`
/// open at once. A connection past the cap is closed as it arrives; an accept error
/// pauses the loop (and is logged once per run of errors, not once per pause).
pub fn accept_limited(
    listener: TcpListener,
    limits: ServerLimits,
    shutdown: CancellationToken,
) -> impl Stream<Item = io::Result<Limited<TcpStream>>> {
    let max = limits.max_connections;
    let max_per_peer = limits.max_connections_per_peer;
    let first_bytes_timeout = limits.first_bytes_timeout;
    let idle_timeout = limits.idle_connection_timeout;
    let permits = Arc::new(Semaphore::new(max));
    let reserve = Arc::new(Semaphore::new(LOOPBACK_RESERVE));
    let peers = PeerCounts::default();
    async_stream::stream! {
        let mut refused_since_log = 0u64;
        let mut failed_accepts = 0u64;
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    if failed_accepts == 0 {
                        tracing::error!(%error, "cannot accept connections (out of file descriptors?); pausing {ACCEPT_BACKOFF:?} between tries");
                    }
                    failed_accepts += 1;
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            if failed_accepts > 0 {
                tracing::warn!(failed = failed_accepts, "accepting connections again");
                failed_accepts = 0;
            }
            // The host itself is exempt from the per-peer share: its processes (the health
            // probe, a local proxy) are the deployment's own.
            let per_peer = if is_the_host_itself(peer.ip()) { usize::MAX } else { max_per_peer };
            let share = PeerShare::take(&peers, peer.ip(), per_peer);
            let permit = permits.clone().try_acquire_owned().ok().or_else(|| {
                is_the_host_itself(peer.ip())
                    .then(|| reserve.clone().try_acquire_owned().ok())
                    .flatten()
            });
            match (permit, share) {
                (Some(permit), Some(share)) => {
                    // Without TCP_NODELAY small responses wait ~40 ms for delayed ACKs.
                    let _ = stream.set_nodelay(true);
                    if refused_since_log > 0 {
                        tracing::warn!(refused = refused_since_log, max, max_per_peer, "connections were refused at the caps");
                        refused_since_log = 0;
                    }
                    yield Ok(Limited {
                        inner: stream,
                        _permit: permit,
                        _peer: share,
                        first_bytes: Some(Box::pin(tokio::time::sleep(first_bytes_timeout))),
                        activity: Activity::new(),
                        idle_timeout,
                        idle_check: Box::pin(tokio::time::sleep(idle_timeout)),
                    });
                }
                (permit, share) => {
                    if refused_since_log == 0 {
                        let which = if share.is_none() { "this peer holds its maximum" } else { "the server holds its maximum" };
                        tracing::warn!(%peer, max, max_per_peer, "connection refused: {which}");
                    }
                    refused_since_log += 1;
                    drop((permit, share));
                    drop(stream);
                }
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Limited<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(deadline) = this.first_bytes.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the connection sent nothing within the first-bytes timeout",
            )));
        }
        // The idle check runs on the read side, which the server always has pending: the
        // timer wakes it, and a connection idle for the whole timeout reads as closed.
        while this.idle_check.as_mut().poll(cx).is_ready() {
            match this.activity.idle_since() {
                Some(since) if since.elapsed() >= this.idle_timeout => {
                    return Poll::Ready(Ok(()));
                }
                Some(since) => this
                    .idle_check
                    .as_mut()
                    .reset((since + this.idle_timeout).into()),
                None => this
                    .idle_check
                    .as_mut()
                    .reset(tokio::time::Instant::now() + this.idle_timeout),
            }
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.first_bytes = None;
        }
        read
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Limited<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<T: Connected> Connected for Limited<T> {
    type ConnectInfo = ConnectionInfo<T::ConnectInfo>;

    fn connect_info(&self) -> Self::ConnectInfo {
        ConnectionInfo {
            inner: self.inner.connect_info(),
            activity: self.activity.clone(),
        }
    }
}
