//! What one client can hold of a server, bounded, and refused promptly past the bound:
//! connections, streams per connection, requests in progress per connection, header
//! size, and how long a unary call may run when its caller set no deadline.
//!
//! A connection past the cap is accepted and closed at once (the client sees the
//! connection refused, not a hang), and an accept error such as running out of file
//! descriptors pauses the accept loop instead of spinning a core.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use clap::Args;
use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

/// The bounds a server enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Open connections at once.
    pub max_connections: usize,
    /// HTTP/2 streams (calls) open at once on one connection.
    pub max_streams_per_connection: u32,
    /// Calls being handled at once on one connection; more are refused at once with
    /// RESOURCE_EXHAUSTED instead of queueing.
    pub max_calls_per_connection: usize,
    /// Largest request header block.
    pub max_header_bytes: u32,
    /// How long a call may take when its caller set no deadline (a caller's shorter
    /// deadline wins). Streams answer within it and then run on.
    pub default_deadline: Duration,
    /// Event-feed subscriptions open at once.
    pub max_subscribers: usize,
    /// Event-feed subscriptions one tenant may hold open at once.
    pub max_subscribers_per_tenant: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 512,
            max_streams_per_connection: 256,
            max_calls_per_connection: 256,
            max_header_bytes: 16 * 1024,
            default_deadline: Duration::from_secs(30),
            max_subscribers: 1000,
            max_subscribers_per_tenant: 100,
        }
    }
}

/// The limits as flags and environment variables.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Open connections at once; more are closed as they arrive.
    #[arg(long, env = "AGILEPM_MAX_CONNECTIONS", default_value_t = ServerLimits::default().max_connections)]
    pub max_connections: usize,
    /// Calls (HTTP/2 streams) open at once on one connection.
    #[arg(long, env = "AGILEPM_MAX_STREAMS_PER_CONNECTION", default_value_t = ServerLimits::default().max_streams_per_connection)]
    pub max_streams_per_connection: u32,
    /// Calls being handled at once on one connection; more get RESOURCE_EXHAUSTED.
    #[arg(long, env = "AGILEPM_MAX_CALLS_PER_CONNECTION", default_value_t = ServerLimits::default().max_calls_per_connection)]
    pub max_calls_per_connection: usize,
    /// Seconds a call may take when its caller set no deadline.
    #[arg(long, env = "AGILEPM_DEFAULT_DEADLINE_SECS", default_value_t = ServerLimits::default().default_deadline.as_secs())]
    pub default_deadline_secs: u64,
    /// Event-feed subscriptions open at once; more get RESOURCE_EXHAUSTED.
    #[arg(long, env = "AGILEPM_MAX_SUBSCRIBERS", default_value_t = ServerLimits::default().max_subscribers)]
    pub max_subscribers: usize,
    /// Event-feed subscriptions one tenant may hold open at once.
    #[arg(long, env = "AGILEPM_MAX_SUBSCRIBERS_PER_TENANT", default_value_t = ServerLimits::default().max_subscribers_per_tenant)]
    pub max_subscribers_per_tenant: usize,
}

impl LimitArgs {
    /// The limits these flags describe.
    pub fn resolve(&self) -> ServerLimits {
        ServerLimits {
            max_connections: self.max_connections.max(1),
            max_streams_per_connection: self.max_streams_per_connection.max(1),
            max_calls_per_connection: self.max_calls_per_connection.max(1),
            default_deadline: Duration::from_secs(self.default_deadline_secs.max(1)),
            max_subscribers: self.max_subscribers.max(1),
            max_subscribers_per_tenant: self.max_subscribers_per_tenant.max(1),
            ..ServerLimits::default()
        }
    }
}

/// How long the accept loop pauses after an accept error (out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A connection that holds one of the server's connection permits while it lives.
pub struct Limited<T> {
    inner: T,
    _permit: OwnedSemaphorePermit,
}

/// Connections accepted on `listener` until `shutdown`, at most `max` open at once. A
/// connection past the cap is closed as it arrives; an accept error pauses the loop.
pub fn accept_limited(
    listener: TcpListener,
    max: usize,
    shutdown: CancellationToken,
) -> impl Stream<Item = io::Result<Limited<TcpStream>>> {
    let permits = Arc::new(Semaphore::new(max));
    async_stream::stream! {
        let mut refused_since_log = 0u64;
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::error!(%error, "cannot accept a connection; pausing {ACCEPT_BACKOFF:?}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            match permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    // Without TCP_NODELAY small responses wait ~40 ms for delayed ACKs.
                    let _ = stream.set_nodelay(true);
                    if refused_since_log > 0 {
                        tracing::warn!(refused = refused_since_log, max, "connections were refused at the cap");
                        refused_since_log = 0;
                    }
                    yield Ok(Limited { inner: stream, _permit: permit });
                }
                Err(_) => {
                    if refused_since_log == 0 {
                        tracing::warn!(%peer, max, "connection refused: the server holds its maximum");
                    }
                    refused_since_log += 1;
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
        Pin::new(&mut self.inner).poll_read(cx, buf)
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
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}
