//! Metrics, set up once per process: OpenTelemetry instruments, read by Prometheus at
//! `--metrics-address` (`GET /metrics`) and pushed over OTLP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Without either, instruments cost next to nothing.
//!
//! Instruments are created from [`meter`] wherever the measured thing lives (the RPC
//! layer, the group commit, the feed, the pool, the coordinator), each module owning its
//! own: this module only wires the exporters. Every name is listed in
//! `deploy/README.md` ("Operating agilepm"), with what to alert on.
//!
//! Labels never carry a value a client chooses freely (an RPC path that is not ours is
//! `_OTHER`), so no caller can grow the number of series.

use std::net::SocketAddr;
use std::time::Duration;

use opentelemetry::metrics::Meter;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use prometheus::{Encoder as _, TextEncoder};

/// The meter every agilepm instrument is created from. Instruments made before
/// [`init`] ran (in tests that never call it) measure nothing.
pub fn meter() -> Meter {
    opentelemetry::global::meter("agilepm")
}

/// Histogram bucket bounds for durations, in seconds: 0.5 ms to 10 s.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often metrics are pushed over OTLP.
const OTLP_PUSH_EVERY: Duration = Duration::from_secs(10);

/// Scrapes served at once; more wait for one to finish.
const MAX_CONCURRENT_SCRAPES: usize = 4;

/// Keeps the meter provider (and the scrape endpoint) running; flushes OTLP when dropped.
pub struct MetricsGuard {
    /// None when nothing reads metrics (no scrape endpoint, no OTLP).
    provider: Option<SdkMeterProvider>,
    endpoint: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for MetricsGuard {
    fn drop(&mut self) {
        if let Some(endpoint) = self.endpoint.take() {
            endpoint.abort();
        }
        if let Some(Err(error)) = self.provider.as_ref().map(SdkMeterProvider::shutdown) {
            eprintln!("metrics shutdown: {error}");
        }
    }
}

/// Installs the global meter provider for `resource`: a Prometheus scrape endpoint on
/// `scrape_at` (if given; port 0 picks one, and the address bound is returned), an OTLP
/// push when `otlp` is true unless `OTEL_METRICS_EXPORTER=none` (the standard switch, for
/// a deployment whose Prometheus scrapes and whose collector takes traces only). Call
/// inside the tokio runtime.
pub fn init(
    resource: Resource,
    scrape_at: Option<SocketAddr>,
    otlp: bool,
) -> anyhow::Result<(MetricsGuard, Option<SocketAddr>)> {
    let mut builder = SdkMeterProvider::builder().with_resource(resource);
    let mut endpoint = None;
    let mut bound = None;
    if let Some(address) = scrape_at {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .build()?;
        builder = builder.with_reader(exporter);
        let listener = std::net::TcpListener::bind(address).map_err(|error| {
            anyhow::anyhow!("cannot listen for metrics scrapes on {address}: {error}")
        })?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        bound = Some(listener.local_addr()?);
        endpoint = Some(tokio::spawn(serve_scrapes(listener, registry)));
    }
    let otlp = otlp && std::env::var("OTEL_METRICS_EXPORTER").map_or(true, |v| v != "none");
    if endpoint.is_none() && !otlp {
        // Nothing would read the instruments: keep the global no-op provider, whose
        // instruments record nothing silently. A provider without a reader refuses every
        // observable instrument with an ERROR line ("InstrumentCreationFailed") at start,
        // an error that is not one and teaches operators to ignore errors.
        return Ok((
            MetricsGuard {
                provider: None,
                endpoint: None,
            },
            None,
        ));
    }
    if otlp {
        let mut exporter = opentelemetry_otlp::MetricExporter::builder().with_tonic();
        if let Some(tls) = crate::wire::telemetry::otlp_tls()? {
            use opentelemetry_otlp::WithTonicConfig as _;
            exporter = exporter.with_tls_config(tls);
        }
        let exporter = exporter.build()?;
        builder = builder.with_reader(
            PeriodicReader::builder(exporter)
                .with_interval(OTLP_PUSH_EVERY)
                .build(),
        );
    }
    let provider = builder.build();
    opentelemetry::global::set_meter_provider(provider.clone());
    if let Some(address) = bound {
        tracing::info!(%address, "serving metrics for Prometheus at /metrics");
    }
    Ok((
        MetricsGuard {
            provider: Some(provider),
            endpoint,
        },
        bound,
    ))
}

/// Answers `GET /metrics` with the Prometheus text format until the process ends.
async fn serve_scrapes(listener: tokio::net::TcpListener, registry: prometheus::Registry) {
    let scrape = move || {
        let registry = registry.clone();
        async move {
            let mut body = Vec::new();
            match TextEncoder::new().encode(&registry.gather(), &mut body) {
                Ok(()) => (
                    http::StatusCode::OK,
                    [(http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
                    body,
                ),
                Err(error) => {
                    tracing::error!(%error, "metrics could not be encoded");
                    (
                        http::StatusCode::INTERNAL_SERVER_ERROR,
                        [(http::header::CONTENT_TYPE, "text/plain")],
                        error.to_string().into_bytes(),
                    )
                }
            }
        }
    };
    let router = axum::Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .layer(tower::limit::ConcurrencyLimitLayer::new(
            MAX_CONCURRENT_SCRAPES,
        ));
    if let Err(error) = axum::serve(listener, router).await {
        tracing::error!(%error, "the metrics endpoint stopped");
    }
}
