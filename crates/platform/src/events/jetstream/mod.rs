//! NATS JetStream as the event backbone past one machine (docs/design.md §3.7, "Past one host").
//!
//! Each service that owns events can relay its outbox, in feed order, to a stream of its
//! own ([`relay`]); consumers with many replicas share a durable pull consumer on it and
//! acknowledge each message after its effect ([`consumer`]). The gRPC feed stays: it is
//! what the relay reads, and all `agilepm dev` needs.
//!
//! | stream | subjects | one message per |
//! |---|---|---|
//! | `AGILEPM_TASK` | `agilepm.task.<tenant>.<aggregate id>` | outbox event |
//!
//! A message's payload is the feed's own `agilepm.events.v1.Event` (the same bytes a
//! gRPC subscriber receives, position included), with headers:
//! * `Nats-Msg-Id`: the event id, so JetStream drops a re-published event inside its
//!   duplicate window;
//! * [`POSITION_HEADER`]: the event's feed position, so a relay that starts finds where
//!   the stream ends in its feed;
//! * [`EVENT_TYPE_HEADER`] and `traceparent`, for consumers that filter or trace
//!   without decoding.

pub mod consumer;
mod meters;
pub mod permissions;
pub mod relay;

use std::borrow::Cow;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use prost::Message as _;

use crate::domain::service_name::ServiceName;
use crate::wire::config::NatsConfig;

/// The header carrying an event's feed position.
pub const POSITION_HEADER: &str = "Agilepm-Position";
/// The header carrying an event's type (`agilepm.task.v1.TaskDefined`).
pub const EVENT_TYPE_HEADER: &str = "Agilepm-Event-Type";

/// How long one JetStream request (a publish acknowledgement, a stream lookup) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The stream `service` relays to: `AGILEPM_TASK`, `AGILEPM_BACKLOG_ITEM`.
pub fn stream_name(service: ServiceName) -> String {
    format!(
        "AGILEPM_{}",
        service.as_str().to_ascii_uppercase().replace('-', "_")
    )
}

/// Every subject of `service`'s stream: `agilepm.task.>`.
pub fn stream_subjects(service: ServiceName) -> String {
    format!("agilepm.{}.>", service.as_str())
}

/// The subject of one event: `agilepm.<service>.<tenant>.<aggregate id>`, so a consumer
/// can take one tenant's (or one aggregate's) events with a subject filter.
pub fn subject(service: ServiceName, tenant: &str, aggregate_id: &str) -> String {
    format!(
        "agilepm.{}.{}.{}",
        service.as_str(),
        token(tenant),
        token(aggregate_id)
    )
}

/// `text` as one subject token: ids of letters, digits, `-` and `_` (tenants, UUIDs) as
/// they are; any other byte (`.`, `*`, `>`, spaces would split or widen the subject) as
/// `%XX`, and the empty id as `%`.
fn token(text: &str) -> Cow<'_, str> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    if !text.is_empty() && text.bytes().all(plain) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() * 3 + 1);
    if text.is_empty() {
        out.push('%');
    }
    for b in text.bytes() {
        if plain(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Cow::Owned(out)
}

/// A client of the servers in `config`, named after `service` in the servers' monitoring,
/// as `service`'s NATS user when credentials are configured, over TLS verified against
/// the configured CA when one is (or the URL says `tls://`), and hearing replies on its
/// own inbox prefix ([`permissions::inbox_prefix`]). It connects (and reconnects) in the
/// background, so a service starts while NATS is away and its JetStream calls fail until
/// NATS is back.
pub async fn connect(
    config: &NatsConfig,
    service: ServiceName,
) -> anyhow::Result<jetstream::Context> {
    let url = config
        .url
        .as_deref()
        .context("no NATS URL configured (AGILEPM_NATS_URL)")?;
    let servers: Vec<&str> = url.split(',').map(str::trim).collect();
    // The URL may carry a password (`nats://user:pass@host`): never in a message.
    let shown = servers
        .iter()
        .map(|server| crate::storage::db::redacted_url(server))
        .collect::<Vec<_>>()
        .join(",");
    crate::wire::tls::install_crypto_provider();
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("agilepm-{service}"))
        .custom_inbox_prefix(permissions::inbox_prefix(service))
        .retry_on_initial_connect()
        .connection_timeout(REQUEST_TIMEOUT)
        .event_callback(move |event| async move { log_connection_event(service, event) });
    if let Some(credentials) = &config.credentials {
        use secrecy::ExposeSecret as _;
        options = options.user_and_password(
            credentials.user.clone(),
            credentials.password.expose_secret().to_owned(),
        );
    }
    if let Some(ca) = &config.ca_file {
        anyhow::ensure!(
            ca.is_file(),
            "AGILEPM_NATS_CA_FILE {}: no such file",
            ca.display()
        );
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    let client = options
        .connect(servers.as_slice())
        .await
        .with_context(|| format!("AGILEPM_NATS_URL {shown}"))?;
    Ok(jetstream::ContextBuilder::new()
        .timeout(REQUEST_TIMEOUT)
        .build(client))
}

/// A refusal by the server (wrong credentials, a subject this service may not use) is a
/// deployment fault the operator must see, once per occurrence; a lost connection is
/// retried and says so at warn.
fn log_connection_event(service: ServiceName, event: async_nats::Event) {
    match event {
        async_nats::Event::ServerError(error) => {
            tracing::error!(%service, %error, "the NATS server refused this service");
        }
        async_nats::Event::ClientError(error) => {
            tracing::error!(%service, %error, "the NATS connection failed");
        }
        async_nats::Event::Disconnected | async_nats::Event::LameDuckMode => {
            tracing::warn!(%service, %event, "NATS connection");
        }
        other => tracing::info!(%service, event = %other, "NATS connection"),
    }
}

/// `service`'s stream, created as `config` describes if it does not exist yet (by the
/// relay or a consumer, whichever starts first). An existing stream keeps the settings
/// an operator gave it.
pub async fn ensure_stream(
    context: &jetstream::Context,
    service: ServiceName,
    config: &NatsConfig,
) -> anyhow::Result<stream::Stream> {
    let name = stream_name(service);
    context
        .get_or_create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![stream_subjects(service)],
            description: Some(format!("agilepm: the {service} service's outbox events")),
            // Every consumer (coordinator, notifier) reads every message: limits, not a
            // work queue; messages go when they are older than `max_age`.
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            num_replicas: config.stream_replicas,
            duplicate_window: config.duplicate_window,
            max_age: config.max_age,
            discard: stream::DiscardPolicy::Old,
            ..Default::default()
        })
        .await
        .with_context(|| format!("the JetStream stream {name}"))
}

/// The bytes a message carries for `event`.
pub fn encode(event: &agilepm_proto::events::v1::Event) -> Bytes {
    Bytes::from(event.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_carry_tenant_and_aggregate_as_single_tokens() {
        assert_eq!(
            subject(ServiceName::Task, "acme", "0193-ab_c"),
            "agilepm.task.acme.0193-ab_c"
        );
        // A member id may be an e-mail address: its dot must not split the subject.
        assert_eq!(
            subject(ServiceName::Planning, "acme", "cy.d@x *>"),
            "agilepm.planning.acme.cy%2Ed%40x%20%2A%3E"
        );
        assert_eq!(
            subject(ServiceName::Task, "acme", ""),
            "agilepm.task.acme.%"
        );
        assert_eq!(
            stream_name(ServiceName::BacklogItem),
            "AGILEPM_BACKLOG_ITEM"
        );
        assert_eq!(stream_subjects(ServiceName::Task), "agilepm.task.>");
    }
}
