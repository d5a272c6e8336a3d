//! Logs and traces, set up once per process.
//!
//! * `tracing` events go to stderr (`AGILEPM_LOG_FORMAT=json` for JSON lines), filtered by
//!   `RUST_LOG` (default `info`).
//! * Spans are OpenTelemetry spans, so every log line inside a request belongs to a trace;
//!   W3C `traceparent` is extracted from incoming gRPC metadata (`server`) and injected
//!   into outgoing calls (`client`).
//! * With `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are exported over OTLP/gRPC in batches
//!   and flushed when the [`TelemetryGuard`] drops; an `https://` collector is verified
//!   against `OTEL_EXPORTER_OTLP_CERTIFICATE` (or the host's roots).
//! * Metrics ([`metrics`](crate::wire::metrics)) are served for Prometheus at
//!   `--metrics-address` and pushed over OTLP with the traces.
//! * With `SENTRY_DSN` set, error events and panics go to Sentry
//!   ([`error_report`](crate::wire::error_report)).

use anyhow::Context as _;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithTonicConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Flushes and shuts down the trace exporter (and error reporting) when dropped.
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
    _metrics: crate::wire::metrics::MetricsGuard,
    metrics_address: Option<std::net::SocketAddr>,
    _reporting: crate::wire::error_report::ReportGuard,
}

impl TelemetryGuard {
    /// Where Prometheus scrapes this process, if it serves metrics.
    pub fn metrics_address(&self) -> Option<std::net::SocketAddr> {
        self.metrics_address
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("telemetry shutdown: {error}");
        }
    }
}

/// Installs the global subscriber, propagator and meter provider for process
/// `service_name`, serving metrics at `metrics_address` when given. Call once, first
/// thing in `main` (inside the runtime); keep the guard alive until exit.
pub fn init(
    service_name: &str,
    metrics_address: Option<std::net::SocketAddr>,
) -> anyhow::Result<TelemetryGuard> {
    crate::wire::tls::install_crypto_provider();
    let reporting = crate::wire::error_report::init(service_name)?;
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name.to_owned())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            crate::wire::config::VERSION,
        ))
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource.clone());
    let exporting = std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
    if exporting {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        if let Some(tls) = otlp_tls()? {
            exporter = exporter.with_tls_config(tls);
        }
        let exporter = exporter.build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    let tracer = provider.tracer("agilepm");

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("AGILEPM_LOG_FORMAT").is_ok_and(|f| f == "json");
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    // The log filter applies to log output only: request spans stay enabled for
    // OpenTelemetry whatever RUST_LOG says, so trace context always propagates.
    // With SENTRY_DSN, error events are reported and info and warn events ride along as
    // breadcrumbs (whatever RUST_LOG says: an operator quieting the log keeps them).
    let reporting_layers = crate::wire::error_report::enabled().then(|| {
        use sentry::integrations::tracing::{BreadcrumbLayer, ErrorLayer};
        ErrorLayer::new()
            .with_filter(LevelFilter::ERROR)
            .and_then(BreadcrumbLayer::new().with_filter(LevelFilter::INFO))
    });
    let registry = tracing_subscriber::registry()
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(LevelFilter::INFO),
        )
        .with(reporting_layers);
    if json {
        registry.with(fmt.json().with_filter(filter)).try_init()?;
    } else {
        registry.with(fmt.with_filter(filter)).try_init()?;
    }
    if exporting {
        tracing::info!("exporting traces and metrics over OTLP");
    }
    let (metrics, metrics_address) =
        crate::wire::metrics::init(resource, metrics_address, exporting)?;
    Ok(TelemetryGuard {
        provider,
        _metrics: metrics,
        metrics_address,
        _reporting: reporting,
    })
}

/// TLS for an `https://` OTLP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`), by the
/// OpenTelemetry settings: the collector verified against the CA in
/// `OTEL_EXPORTER_OTLP_CERTIFICATE`, or the host's roots without one; a client
/// certificate from `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` and `_CLIENT_KEY` when the
/// collector asks for one. `None` for a plaintext endpoint.
pub(crate) fn otlp_tls() -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
    let https = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .is_ok_and(|endpoint| endpoint.trim().to_ascii_lowercase().starts_with("https://"));
    if !https {
        return Ok(None);
    }
    let path = |variable: &str| std::env::var_os(variable).map(std::path::PathBuf::from);
    let files = crate::wire::tls::ClientTlsFiles {
        ca: path("OTEL_EXPORTER_OTLP_CERTIFICATE"),
        cert: path("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"),
        key: path("OTEL_EXPORTER_OTLP_CLIENT_KEY"),
    };
    let mut tls = files
        .config()
        .context("OTEL_EXPORTER_OTLP_CERTIFICATE / _CLIENT_CERTIFICATE / _CLIENT_KEY")?;
    if files.ca.is_none() {
        tls = tls.with_native_roots();
    }
    Ok(Some(tls))
}

/// For tests: a subscriber writing through the test harness (shown only for failing
/// tests), installed at most once per process.
pub fn init_for_tests() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        crate::wire::tls::install_crypto_provider();
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let provider = SdkTracerProvider::builder().build();
        let tracer = provider.tracer("agilepm-test");
        opentelemetry::global::set_tracer_provider(provider);
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
        let _ = tracing_subscriber::registry()
            .with(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(LevelFilter::INFO),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .with_test_writer()
                    .with_filter(filter),
            )
            .try_init();
    });
}

/// Reads W3C trace context from HTTP headers (incoming gRPC metadata).
pub struct HeaderExtractor<'a>(pub &'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Writes W3C trace context into outgoing gRPC metadata.
pub struct MetadataInjector<'a>(pub &'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}
