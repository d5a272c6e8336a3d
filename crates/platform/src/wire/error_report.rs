//! Errors to Sentry. With `SENTRY_DSN` set, every error-level log event and every panic
//! is reported, tagged with the service, and when it happens inside a request with the
//! tenant, the caller, the RPC, and the request's trace and span ids (the span id names
//! the one call). Without it nothing is reported and requests pay nothing.
//!
//! Client mistakes are not errors: they are logged below error level (`domain::error`),
//! so they never reach Sentry. Warnings and info events go along as breadcrumbs.

use std::str::FromStr as _;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::Either;
use http::Request;
use opentelemetry::trace::TraceContextExt as _;
use sentry::{Hub, SentryFuture, SentryFutureExt as _};
use tower::{Layer, Service};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::wire::auth::Caller;

/// Keeps reporting on; flushes what is queued when dropped (at exit).
pub struct ReportGuard {
    _client: Option<sentry::ClientInitGuard>,
}

/// Starts reporting to `SENTRY_DSN` (if set) as `service`; a DSN that does not parse is a
/// start-up error rather than errors silently lost.
pub fn init(service: &str) -> anyhow::Result<ReportGuard> {
    let dsn = match std::env::var("SENTRY_DSN") {
        Ok(dsn) if !dsn.trim().is_empty() => dsn,
        _ => return Ok(ReportGuard { _client: None }),
    };
    let dsn = dsn.trim();
    // Checked here: the SDK panics on a DSN it cannot parse.
    sentry::types::Dsn::from_str(dsn)
        .map_err(|error| anyhow::anyhow!("SENTRY_DSN does not parse: {error}"))?;
    let mut options = sentry::ClientOptions::new()
        .dsn(dsn)
        .release(crate::wire::config::VERSION);
    if let Ok(environment) = std::env::var("SENTRY_ENVIRONMENT") {
        options = options.environment(environment);
    }
    let client = sentry::init(options);
    sentry::configure_scope(|scope| scope.set_tag("service", service));
    Ok(ReportGuard {
        _client: Some(client),
    })
}

/// Whether errors are being reported.
pub fn enabled() -> bool {
    Hub::current()
        .client()
        .is_some_and(|client| client.is_enabled())
}

/// Gives each request its own Sentry scope, tagged with who called what, so that an
/// error logged while handling it says so. Sits inside the authentication layer, which
/// puts the caller in the request.
#[derive(Clone, Copy, Default)]
pub struct ReportingLayer;

impl<S> Layer<S> for ReportingLayer {
    type Service = Reporting<S>;

    fn layer(&self, inner: S) -> Reporting<S> {
        Reporting { inner }
    }
}

/// A service whose requests run in a Sentry scope of their own (when reporting).
#[derive(Clone)]
pub struct Reporting<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for Reporting<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, SentryFuture<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if !enabled() {
            return Either::Left(self.inner.call(request));
        }
        let hub = Arc::new(Hub::new_from_top(Hub::current()));
        hub.configure_scope(|scope| {
            // The path is the client's: bounded like every echoed value.
            let path = request.uri().path();
            match path.len() {
                0..=200 => scope.set_tag("rpc", path),
                _ => scope.set_tag("rpc", crate::domain::error::shown(path)),
            }
            if let Some(caller) = request.extensions().get::<Caller>() {
                scope.set_tag("tenant", caller.tenant().unwrap_or("(all tenants)"));
                scope.set_tag("subject", caller.actor());
            }
            let span = tracing::Span::current().context();
            let span = span.span();
            let context = span.span_context();
            if context.is_valid() {
                scope.set_tag("trace_id", context.trace_id());
                scope.set_tag("span_id", context.span_id());
            }
        });
        Either::Right(self.inner.call(request).bind_hub(hub))
    }
}
