//! Starting a service's gRPC server: its domain services plus `grpc.health.v1.Health`,
//! server reflection, request spans with W3C trace context, and graceful shutdown.

use std::convert::Infallible;
use std::time::Duration;

use http::Request as HttpRequest;
use opentelemetry::KeyValue;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::Service;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::domain::service_name::ServiceName;
use crate::storage::db::Db;
use crate::wire::admission::{AdmissionLayer, Readiness};
use crate::wire::auth::Authenticator;
use crate::wire::auth::layer::AuthLayer;
use crate::wire::browser::BrowserAccess;
use crate::wire::error_report::ReportingLayer;
use crate::wire::idle::IdleTrackingLayer;
use crate::wire::limits::{BoundedMessages, ServerLimits, accept_limited};
use crate::wire::malformed::MalformedLayer;
use crate::wire::rpc_metrics::RpcMetricsLayer;
use crate::wire::telemetry::HeaderExtractor;
use crate::wire::tls::ServerTls;

/// A server under construction: add services, then [`GrpcServer::serve`].
pub struct GrpcServer {
    routes: RoutesBuilder,
    names: Vec<&'static str>,
    health: HealthReporter,
    authenticator: Authenticator,
    tls: Option<ServerTls>,
    limits: ServerLimits,
    browser: BrowserAccess,
}

impl GrpcServer {
    /// An empty server with health and reflection ready to be filled, whose every agilepm
    /// method is authenticated by `authenticator` and checked against the role table.
    pub fn new(authenticator: Authenticator) -> GrpcServer {
        let (health, health_service) = tonic_health::server::health_reporter();
        let mut routes = RoutesBuilder::default();
        routes.add_service(health_service);
        GrpcServer {
            routes,
            names: Vec::new(),
            health,
            authenticator,
            tls: None,
            limits: ServerLimits::default(),
            browser: BrowserAccess::default(),
        }
    }

    /// Enforces `limits` instead of the defaults.
    pub fn with_limits(mut self, limits: ServerLimits) -> GrpcServer {
        self.limits = limits;
        self
    }

    /// Lets pages from `browser`'s origins call over gRPC-Web (every port answers
    /// gRPC-Web; without an allowed origin only same-origin pages and non-browser
    /// clients can use it).
    pub fn with_browser(mut self, browser: BrowserAccess) -> GrpcServer {
        self.browser = browser;
        self
    }

    /// Serves TLS (and mutual TLS when `tls` requires client certificates).
    pub fn with_tls(mut self, tls: Option<ServerTls>) -> GrpcServer {
        self.tls = tls;
        self
    }

    /// Adds a domain service, its message sizes bounded by the server's limits (set them
    /// with [`GrpcServer::with_limits`] first).
    pub fn add_service<S>(mut self, service: S) -> GrpcServer
    where
        S: Service<HttpRequest<Body>, Error = Infallible>
            + NamedService
            + BoundedMessages
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes.add_service(service.bounded(&self.limits));
        self
    }

    /// The health reporter, for services that flip their own health (the coordinator).
    pub fn health_reporter(&self) -> HealthReporter {
        self.health.clone()
    }

    /// Serves on `listener` until `shutdown` is cancelled, then drains in-flight requests.
    /// Health is `SERVING` for every added service while `db` (if given) answers pings,
    /// `NOT_SERVING` otherwise.
    pub async fn serve(
        self,
        listener: TcpListener,
        db: Option<Db>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let GrpcServer {
            mut routes,
            names,
            health,
            authenticator,
            tls,
            limits,
            browser,
        } = self;
        for name in &names {
            health
                .set_service_status(*name, ServingStatus::Serving)
                .await;
        }
        health.set_service_status("", ServingStatus::Serving).await;
        // Liveness says only that the process answers: what readiness reports (the
        // database, the coordinator's progress, a poison event) is not fixed by a
        // restart, so it never turns this one.
        health
            .set_service_status(LIVENESS, ServingStatus::Serving)
            .await;

        // Reflection advertises exactly what this port serves (the shared descriptor set
        // holds every agilepm service), and resolves google.rpc error details too.
        let reflection = |reflection_service: &'static str| {
            let mut builder = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(agilepm_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
                .with_service_name("grpc.health.v1.Health")
                .with_service_name(reflection_service);
            for name in &names {
                builder = builder.with_service_name(*name);
            }
            builder
        };
        let reflection_alpha = reflection("grpc.reflection.v1alpha.ServerReflection");
        let reflection = reflection("grpc.reflection.v1.ServerReflection");
        routes.add_service(reflection.build_v1()?);
        routes.add_service(reflection_alpha.build_v1alpha()?);

        let readiness = Readiness::default();
        if let Some(db) = db {
            let probe = db.open_separate_pool(1).await?;
            tokio::spawn(watch_database(
                probe,
                db.service(),
                readiness.clone(),
                health.clone(),
                names.clone(),
                shutdown.clone(),
            ));
        }

        let address = listener.local_addr()?;
        let router = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .max_concurrent_streams(limits.max_streams_per_connection)
            .http2_max_header_list_size(limits.max_header_bytes)
            .concurrency_limit_per_connection(limits.max_calls_per_connection)
            // Past the limit a call is refused at once (RESOURCE_EXHAUSTED), not queued.
            .load_shed(true)
            // gRPC-Web from browsers arrives over HTTP/1.1 as often as HTTP/2.
            .accept_http1(true)
            // Outermost: a preflight is answered before anything else, and a gRPC-Web
            // call is translated to gRPC before the layers below see it, so they treat
            // it exactly as a native call (its trailers are encoded back on the way out).
            .layer(browser.cors())
            .layer(tonic_web::GrpcWebLayer::new())
            // A failed call is logged where it becomes a status (`error.rs`): once, at
            // error level for server faults only. The trace layer's own failure line
            // stays at debug, so a client's NOT_FOUND is not an error in the log.
            .layer(
                TraceLayer::new_for_grpc()
                    .make_span_with(request_span)
                    // The call's status: in the headers of a trailers-only answer, else
                    // in the trailers.
                    .on_response(
                        |response: &http::Response<_>, _: Duration, span: &tracing::Span| {
                            record_status(response.headers(), span);
                        },
                    )
                    .on_eos(
                        |trailers: Option<&http::HeaderMap>, _: Duration, span: &tracing::Span| {
                            if let Some(trailers) = trailers {
                                record_status(trailers, span);
                            }
                        },
                    )
                    .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
            )
            // Outside authentication and admission, so their refusals are counted too.
            .layer(RpcMetricsLayer::server())
            // Counts each call on its connection, so idle connections can be closed.
            .layer(IdleTrackingLayer)
            .layer(AuthLayer::new(authenticator))
            .layer(ReportingLayer)
            .layer(AdmissionLayer::new(
                readiness,
                limits.max_calls_in_flight,
                limits.default_deadline,
            ))
            .layer(MalformedLayer)
            .add_routes(routes.routes());
        let accepted = accept_limited(listener, limits, shutdown.clone());
        let serving = async {
            match tls {
                Some(tls) => {
                    tracing::info!(%address, services = ?names, ?limits, "serving gRPC over TLS");
                    router
                        .serve_with_incoming_shutdown(tls.handshake(accepted), shutdown.cancelled())
                        .await
                }
                None => {
                    tracing::info!(%address, services = ?names, ?limits, "serving gRPC");
                    router
                        .serve_with_incoming_shutdown(accepted, shutdown.cancelled())
                        .await
                }
            }
        };
        // At shutdown tonic stops accepting and waits for the calls in flight; streams
        // end at once (the feed answers its subscribers UNAVAILABLE), so only unary calls
        // are waited for, and no longer than the drain deadline.
        let drain_ends = async {
            shutdown.cancelled().await;
            tokio::time::sleep(limits.drain_deadline).await;
        };
        tokio::select! {
            served = serving => served?,
            () = drain_ends => tracing::warn!(
                %address,
                deadline = ?limits.drain_deadline,
                "calls were still in flight at the drain deadline; stopping without them"
            ),
        }
        tracing::info!(%address, "server stopped");
        Ok(())
    }
}

/// The span every request runs in, by OpenTelemetry's RPC conventions: named
/// `package.Service/Method` (`_OTHER` for a path that is not one of ours, so a caller
/// cannot mint span names), kind server, with `rpc.system`, `rpc.service`, `rpc.method`
/// and, once the call ends, `rpc.grpc.status_code`; parented to the caller's trace when
/// the request carries `traceparent`, and recording the trace id so log lines can be
/// joined with traces.
fn request_span<B>(request: &HttpRequest<B>) -> tracing::Span {
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(request.headers()))
    });
    let (service, method) = crate::wire::rpc_metrics::method_labels(request.uri().path());
    let name = if service == crate::wire::rpc_metrics::OTHER {
        std::borrow::Cow::Borrowed(service)
    } else {
        std::borrow::Cow::Owned(format!("{service}/{method}"))
    };
    let span = tracing::info_span!(
        "grpc",
        otel.name = %name,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        // The path is the client's: bounded like every echoed value.
        method = %bounded_path(request.uri().path()),
        trace_id = tracing::field::Empty,
        subject = tracing::field::Empty,
    );
    let _ = span.set_parent(parent);
    let trace_id = {
        use opentelemetry::trace::TraceContextExt as _;
        span.context().span().span_context().trace_id()
    };
    span.record("trace_id", tracing::field::display(trace_id));
    span
}

/// Records the `grpc-status` in `headers`, if any, on the request span.
fn record_status(headers: &http::HeaderMap, span: &tracing::Span) {
    if let Some(code) = crate::wire::rpc_metrics::status_in(headers) {
        span.record("rpc.grpc.status_code", code);
    }
}

/// A request path as logs show it: whole when it is a plausible gRPC path, cut otherwise.
fn bounded_path(path: &str) -> std::borrow::Cow<'_, str> {
    if path.len() <= 200 {
        std::borrow::Cow::Borrowed(path)
    } else {
        std::borrow::Cow::Owned(crate::domain::error::shown(path))
    }
}

/// How often the database is probed, and how long a probe may take.
const PROBE_EVERY: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Failed probes in a row before the database counts as away: one slow answer under load
/// must not turn every call away.
const PROBES_FAILED_TO_BE_AWAY: u32 = 2;

/// Probes the database on a connection of its own (so a pool saturated by calls is not
/// mistaken for a database away), and keeps health and [`Readiness`] up to date: calls
/// are refused at once while the database is away, instead of each waiting out the pool.
async fn watch_database(
    probe: sqlx::AnyPool,
    service: ServiceName,
    readiness: Readiness,
    health: HealthReporter,
    names: Vec<&'static str>,
    shutdown: CancellationToken,
) {
    let ready_gauge = readiness_gauge(service, "database");
    let mut failed_in_a_row = 0;
    let mut interval = tokio::time::interval(PROBE_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = interval.tick() => {}
        }
        let answered = tokio::time::timeout(PROBE_TIMEOUT, sqlx::query("SELECT 1").execute(&probe))
            .await
            .is_ok_and(|result| result.is_ok());
        failed_in_a_row = if answered { 0 } else { failed_in_a_row + 1 };
        let ready = failed_in_a_row < PROBES_FAILED_TO_BE_AWAY;
        ready_gauge(ready);
        if ready == readiness.is_ready() {
            continue;
        }
        readiness.set(ready);
        let status = if ready {
            tracing::info!("database answers again; health SERVING, calls admitted");
            ServingStatus::Serving
        } else {
            tracing::error!(
                "database does not answer; health NOT_SERVING, calls refused with UNAVAILABLE"
            );
            ServingStatus::NotServing
        };
        for name in &names {
            health.set_service_status(*name, status).await;
        }
        health.set_service_status("", status).await;
    }
    probe.close().await;
}

/// Records one readiness condition of `service` as `agilepm.ready{service, condition}`:
/// 1 while it holds, 0 while it turns readiness NOT_SERVING (the alert rules page on a 0
/// that lasts).
pub fn readiness_gauge(service: ServiceName, condition: &'static str) -> impl Fn(bool) {
    let gauge = crate::wire::metrics::meter()
        .u64_gauge("agilepm.ready")
        .with_description(
            "1 while a readiness condition holds (condition: database, progress), 0 while it \
             keeps the service NOT_SERVING",
        )
        .build();
    let labels = [
        KeyValue::new("service", service.as_str()),
        KeyValue::new("condition", condition),
    ];
    move |ready| gauge.record(u64::from(ready), &labels)
}

/// The health service name that answers SERVING whenever the process can answer at all:
/// the liveness probe's (`agilepm health --liveness`). The empty name (and each domain
/// service's) is readiness: NOT_SERVING while the database is unreachable, or the
/// coordinator cannot make progress.
pub const LIVENESS: &str = "agilepm.liveness";

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM; only Ctrl-C will stop the server");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutdown requested");
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt as _;

    #[test]
    fn request_spans_join_the_callers_trace() {
        crate::wire::telemetry::init_for_tests();
        let request = HttpRequest::builder()
            .uri("/agilepm.task.v1.TaskService/GetTask")
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .body(())
            .unwrap();
        let span = request_span(&request);
        let trace_id = span.context().span().span_context().trace_id();
        assert_eq!(trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn requests_without_context_start_a_new_trace() {
        crate::wire::telemetry::init_for_tests();
        let request = HttpRequest::builder().uri("/x/y").body(()).unwrap();
        let span = request_span(&request);
        assert_ne!(
            span.context().span().span_context().trace_id(),
            opentelemetry::trace::TraceId::INVALID
        );
    }
}
