//! `--telemetry on`: what an operator's setup costs the services. They export traces and
//! metrics over OTLP to a collector here (which counts what arrives and keeps nothing),
//! and serve metrics that are scraped every few seconds, as Prometheus would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::ValueEnum;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

/// Whether the services export telemetry during a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Telemetry {
    /// No metrics endpoint, no OTLP export (spans are still made, for log correlation).
    Off,
    /// Metrics served and scraped, traces and metrics exported over OTLP.
    On,
}

/// How often the services' metrics are scraped with `--telemetry on`.
const SCRAPE_EVERY: Duration = Duration::from_secs(5);

/// The OTLP collector: counts spans and metric exports.
#[derive(Clone, Default)]
pub struct Sink {
    spans: Arc<AtomicU64>,
    metric_exports: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.spans.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        _request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.metric_exports.fetch_add(1, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

impl Sink {
    /// Serves the collector on a loopback port until `stop`.
    pub async fn start(stop: CancellationToken) -> anyhow::Result<(Sink, SocketAddr)> {
        let sink = Sink::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(sink.clone()))
            .add_service(MetricsServiceServer::new(sink.clone()))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                stop.cancelled_owned(),
            );
        tokio::spawn(server);
        Ok((sink, address))
    }

    /// Spans received so far.
    pub fn spans(&self) -> u64 {
        self.spans.load(Ordering::Relaxed)
    }
}

/// Scrapes `GET /metrics` at each of `addresses` every few seconds until `stop`; returns
/// the number of successful scrapes.
pub async fn scrape_until(addresses: Vec<SocketAddr>, stop: CancellationToken) -> u64 {
    let mut scrapes = 0;
    let mut interval = tokio::time::interval(SCRAPE_EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => return scrapes,
            _ = interval.tick() => {}
        }
        for address in &addresses {
            if scrape(*address).await.is_ok() {
                scrapes += 1;
            }
        }
    }
}

async fn scrape(address: SocketAddr) -> std::io::Result<usize> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: metrics\r\n\r\n")
        .await?;
    let mut body = Vec::new();
    stream.read_to_end(&mut body).await?;
    Ok(body.len())
}
