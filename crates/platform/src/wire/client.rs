//! Calling peer services: lazily connected channels whose every request carries the
//! service's internal token and the current W3C trace context, with a deadline, and is
//! measured (`rpc.client.call.duration`).

use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator as _;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::wire::peer_target::PeerTarget;
use tonic::{Request, Status};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::wire::auth::Credentials;
use crate::wire::rpc_metrics::{Metered, RpcMetricsLayer};
use crate::wire::telemetry::MetadataInjector;
use tower::Layer as _;

/// A channel to a peer with [`Outgoing`] applied to every call, each call measured.
pub type PeerChannel = InterceptedService<Metered<Channel>, Outgoing>;

/// Adds credentials and trace context to outgoing requests.
#[derive(Clone)]
pub struct Outgoing {
    credentials: Option<Credentials>,
    /// For callers spanning tenants that act for one tenant on every call of the channel.
    acting_for: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl Interceptor for Outgoing {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(credentials) = &self.credentials {
            request
                .metadata_mut()
                .insert("authorization", credentials.authorization());
        }
        if let Some(tenant) = &self.acting_for {
            request
                .metadata_mut()
                .insert(crate::wire::auth::TENANT_HEADER, tenant.clone());
        }
        let context = tracing::Span::current().context();
        opentelemetry_sdk::propagation::TraceContextPropagator::new()
            .inject_context(&context, &mut MetadataInjector(request.metadata_mut()));
        Ok(request)
    }
}

/// How long a peer call may take unless the caller sets its own deadline.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);

/// A lazily connecting channel to `endpoint` (`http://host:port`) that presents
/// `credentials`. Connection failures surface per call as `UNAVAILABLE`, so a service can
/// start before its peers.
pub fn connect_lazy(
    endpoint: &str,
    credentials: Option<Credentials>,
) -> anyhow::Result<PeerChannel> {
    connect_lazy_tls(endpoint, credentials, None)
}

/// Like [`connect_lazy`], with TLS for an `https://` endpoint: the CA that verifies the
/// peer and the certificate presented to it come from `tls`.
pub fn connect_lazy_tls(
    endpoint: &str,
    credentials: Option<Credentials>,
    tls: Option<&ClientTlsConfig>,
) -> anyhow::Result<PeerChannel> {
    connect(
        endpoint,
        Outgoing {
            credentials,
            acting_for: None,
        },
        tls,
    )
}

/// Like [`connect_lazy`], every call acting for `tenant`: for a caller spanning tenants
/// (a service identity, a system operator) that works for one tenant throughout.
pub fn connect_lazy_acting_for(
    endpoint: &str,
    credentials: Credentials,
    tenant: &str,
) -> anyhow::Result<PeerChannel> {
    connect(
        endpoint,
        Outgoing {
            credentials: Some(credentials),
            acting_for: Some(MetadataValue::try_from(tenant)?),
        },
        None,
    )
}

/// `endpoint` may name several replicas: a list, or a `dns:///` name
/// ([`peer_target`](crate::wire::peer_target)); calls are balanced across them.
fn connect(
    endpoint: &str,
    outgoing: Outgoing,
    tls: Option<&ClientTlsConfig>,
) -> anyhow::Result<PeerChannel> {
    let target = PeerTarget::parse(endpoint)?;
    let channel = crate::wire::peer_target::channel(&target, tls, |builder: Endpoint| {
        builder
            .connect_timeout(Duration::from_secs(2))
            .timeout(DEFAULT_DEADLINE)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true)
    })?;
    Ok(InterceptedService::new(
        RpcMetricsLayer::client().layer(channel),
        outgoing,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    };

    #[test]
    fn outgoing_calls_carry_the_current_trace_and_token() {
        crate::wire::telemetry::init_for_tests();
        let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let remote = SpanContext::new(
            trace_id,
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let span = tracing::info_span!("caller");
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
        let _entered = span.enter();
        let mut outgoing = Outgoing {
            credentials: Some(Credentials::Fixed(MetadataValue::from_static(
                "Bearer acme",
            ))),
            acting_for: None,
        };
        let request = outgoing.call(Request::new(())).unwrap();
        let traceparent = request
            .metadata()
            .get("traceparent")
            .unwrap()
            .to_str()
            .unwrap();
        assert!(
            traceparent.contains("4bf92f3577b34da6a3ce929d0e0e4736"),
            "{traceparent}"
        );
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer acme"
        );
    }
}
