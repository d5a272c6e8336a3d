//! Configuration shared by every service binary: flags with environment-variable fallbacks
//! and defaults that work on a developer machine with nothing installed.

pub use crate::domain::service_name::ServiceName;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use secrecy::SecretString;

use crate::wire::auth::AuthConfig;
use crate::wire::browser::{BrowserAccess, BrowserArgs};
use crate::wire::limits::{LimitArgs, ServerLimits};
use crate::wire::tls::{ClientTlsFiles, ServerTlsFiles};

/// What `--version` prints, and the release errors are reported under: the crate
/// version and the git revision it was built from (see the crate's build script).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("AGILEPM_GIT_REVISION"),
    ")"
);

/// Settings every service accepts. Each service flattens this into its own `clap` parser
/// and adds its peers' addresses.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Address the gRPC server listens on.
    #[arg(long, env = "AGILEPM_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Database URL: `sqlite://PATH` (created on first run) or `postgres://USER@HOST/DB`.
    #[arg(long, env = "AGILEPM_DATABASE_URL")]
    pub database_url: Option<String>,

    #[command(flatten)]
    pub auth: AuthArgs,

    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub browser: BrowserArgs,

    #[command(flatten)]
    pub retention: RetentionArgs,

    #[command(flatten)]
    pub nats: NatsArgs,

    /// Serve metrics for Prometheus at `http://ADDRESS/metrics` (e.g. `0.0.0.0:9464`).
    /// Operators' port: keep it off the public network.
    #[arg(long, env = "AGILEPM_METRICS_ADDRESS")]
    pub metrics_address: Option<SocketAddr>,

    /// Largest number of database connections this service opens.
    #[arg(long, env = "AGILEPM_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// Where the backlog-item service is reached (used by task, planning, coordinator).
    #[arg(long, env = "AGILEPM_BACKLOG_ITEM_ENDPOINT")]
    pub backlog_item_endpoint: Option<String>,

    /// Where the task service is reached (used by planning, coordinator, notifier).
    #[arg(long, env = "AGILEPM_TASK_ENDPOINT")]
    pub task_endpoint: Option<String>,

    /// Where the planning service is reached (used by the notifier only: planning pushes
    /// what the other services need, products to backlog-item and team members to task).
    #[arg(long, env = "AGILEPM_PLANNING_ENDPOINT")]
    pub planning_endpoint: Option<String>,
}

impl CommonArgs {
    /// Resolves the settings, filling in the service's defaults.
    pub fn resolve(&self, service: ServiceName) -> anyhow::Result<CommonConfig> {
        Ok(CommonConfig {
            service,
            listen: self
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], service.default_port()))),
            database_url: self
                .database_url
                .clone()
                .unwrap_or_else(|| format!("sqlite://data/{}.db", service.as_str())),
            auth: self.auth.resolve()?,
            tls: self.tls.resolve()?,
            limits: self.limits.resolve(),
            browser: self.browser.resolve()?,
            retention: self.retention.resolve(),
            nats: self.nats.resolve()?,
            db_max_connections: self.db_max_connections.max(1),
            peers: Peers {
                backlog_item: self
                    .backlog_item_endpoint
                    .clone()
                    .unwrap_or_else(|| ServiceName::BacklogItem.default_endpoint()),
                task: self
                    .task_endpoint
                    .clone()
                    .unwrap_or_else(|| ServiceName::Task.default_endpoint()),
                planning: self
                    .planning_endpoint
                    .clone()
                    .unwrap_or_else(|| ServiceName::Planning.default_endpoint()),
            },
        })
    }
}

/// How callers are authenticated (see `auth`). With no key configured the service runs in
/// development mode: unverified tenant tokens, tenant roles only, and a loud warning.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// Shared HS256 secret (at least 32 random bytes) that verifies tokens without `kid`
    /// and signs the services' own tokens.
    #[arg(long, env = "AGILEPM_AUTH_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub auth_secret: Option<SecretString>,
    /// JSON Web Key Set file whose keys verify tokens by `kid`; re-read when it changes.
    #[arg(long, env = "AGILEPM_AUTH_JWKS")]
    pub auth_jwks: Option<PathBuf>,
    /// This service's own private key (PEM: Ed25519, P-256 or RSA) for the tokens it
    /// presents to its peers; its public half is in the key set under the signing kid.
    #[arg(long, env = "AGILEPM_AUTH_SIGNING_KEY", requires = "auth_signing_kid")]
    pub auth_signing_key: Option<PathBuf>,
    /// The `kid` of the signing key: `service.<name>` (e.g. `service.task.2026-12`).
    #[arg(long, env = "AGILEPM_AUTH_SIGNING_KID")]
    pub auth_signing_kid: Option<String>,
    /// Required `iss` claim.
    #[arg(long, env = "AGILEPM_AUTH_ISSUER")]
    pub auth_issuer: Option<String>,
    /// Required `aud` claim.
    #[arg(long, env = "AGILEPM_AUTH_AUDIENCE")]
    pub auth_audience: Option<String>,
    /// Refuse to start in development mode: a deployment that forgot its key stops
    /// instead of running open.
    #[arg(long, env = "AGILEPM_REQUIRE_AUTH", default_value_t = false)]
    pub require_auth: bool,
}

impl AuthArgs {
    /// The configuration these flags describe; refuses weak keys.
    pub fn resolve(&self) -> anyhow::Result<AuthConfig> {
        let config = AuthConfig::from_settings(
            self.auth_secret.clone(),
            self.auth_jwks.clone(),
            self.auth_signing_key
                .clone()
                .zip(self.auth_signing_kid.clone()),
            self.auth_issuer.clone(),
            self.auth_audience.clone(),
        )?;
        anyhow::ensure!(
            !(self.require_auth && config.development),
            "AGILEPM_REQUIRE_AUTH is set but no key is: set AGILEPM_AUTH_SECRET or AGILEPM_AUTH_JWKS"
        );
        Ok(config)
    }
}

fn parse_secret(value: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(value.to_owned()))
}

/// Resolved settings common to every service.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    /// Which service this is.
    pub service: ServiceName,
    /// Where to listen.
    pub listen: SocketAddr,
    /// Where the service's own database lives.
    pub database_url: String,
    /// How callers are authenticated and how this service proves who it is.
    pub auth: AuthConfig,
    /// TLS for this server and for calls to peers.
    pub tls: TlsConfig,
    /// What one client can hold of this server.
    pub limits: ServerLimits,
    /// Which web origins may call from a browser (gRPC-Web).
    pub browser: BrowserAccess,
    /// How long the outbox keeps events.
    pub retention: RetentionOptions,
    /// NATS JetStream: the relay of the outbox, and where the coordinator reads from.
    pub nats: NatsConfig,
    /// Connection pool ceiling.
    pub db_max_connections: u32,
    /// Where the other services are.
    pub peers: Peers,
}

/// How long the outbox keeps events (`events::feed::retention`).
#[derive(Debug, Clone, Args)]
pub struct RetentionArgs {
    /// Events younger than this many seconds are kept (and older ones too while a
    /// registered consumer still needs them).
    #[arg(long, env = "AGILEPM_OUTBOX_RETENTION_SECS", default_value_t = 7 * 24 * 3600)]
    pub outbox_retention_secs: u64,
    /// Hard cap on the events kept: past it the oldest go even if a consumer still needs
    /// them (reported at error level).
    #[arg(long, env = "AGILEPM_OUTBOX_MAX_EVENTS", default_value_t = 10_000_000)]
    pub outbox_max_events: u64,
    /// How often retention runs, in milliseconds.
    #[arg(
        long,
        env = "AGILEPM_OUTBOX_RETENTION_EVERY_MS",
        default_value_t = 60_000
    )]
    pub outbox_retention_every_ms: u64,
}

impl RetentionArgs {
    /// The options these flags describe.
    pub fn resolve(&self) -> RetentionOptions {
        RetentionOptions {
            keep_for: std::time::Duration::from_secs(self.outbox_retention_secs),
            max_events: self.outbox_max_events.max(1),
            every: std::time::Duration::from_millis(self.outbox_retention_every_ms.max(10)),
        }
    }
}

/// How long events are kept and how many at most.
#[derive(Debug, Clone, Copy)]
pub struct RetentionOptions {
    /// Events younger than this are never deleted (while under the hard cap).
    pub keep_for: std::time::Duration,
    /// The hard cap: past this many events the oldest are deleted even if a consumer
    /// still needs them.
    pub max_events: u64,
    /// How often retention runs.
    pub every: std::time::Duration,
}

impl Default for RetentionOptions {
    fn default() -> Self {
        RetentionOptions {
            keep_for: std::time::Duration::from_secs(7 * 24 * 3600),
            max_events: 10_000_000,
            every: std::time::Duration::from_secs(60),
        }
    }
}

/// NATS JetStream, the scale-out event backbone (`events::jetstream`). Without a URL
/// nothing uses NATS: the gRPC feeds are all there is, as in `agilepm dev`.
#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS server URLs, comma-separated (e.g. `nats://nats-0:4222,nats://nats-1:4222`).
    /// When set, every service that owns events relays its outbox to a JetStream stream.
    #[arg(long, env = "AGILEPM_NATS_URL")]
    pub nats_url: Option<String>,
    /// Replicas of each stream (1, or 3 on a three-node JetStream cluster).
    #[arg(long, env = "AGILEPM_NATS_STREAM_REPLICAS", default_value_t = 1)]
    pub nats_stream_replicas: usize,
    /// How long JetStream remembers message ids to drop a re-published event: must
    /// exceed the longest a relay can take to retry a publish (deploy/README.md).
    #[arg(
        long,
        env = "AGILEPM_NATS_DUPLICATE_WINDOW_SECS",
        default_value_t = 120
    )]
    pub nats_duplicate_window_secs: u64,
    /// How long a stream keeps events: longer than any consumer may be down.
    #[arg(long, env = "AGILEPM_NATS_MAX_AGE_SECS", default_value_t = 7 * 24 * 3600)]
    pub nats_max_age_secs: u64,
    /// How long a consumer may hold a message unacknowledged before JetStream hands it to
    /// another replica (a killed replica's work is redelivered after this).
    #[arg(long, env = "AGILEPM_NATS_ACK_WAIT_MS", default_value_t = 30_000)]
    pub nats_ack_wait_ms: u64,
    /// Where the coordinator reads task events: `grpc` (the task service's feed, one
    /// active replica behind a lease) or `nats` (the task stream; every replica works).
    #[arg(long, env = "AGILEPM_FEED", value_enum, default_value_t = FeedSource::Grpc)]
    pub feed: FeedSource,
    /// The NATS user this service connects as: one per service, allowed only its own
    /// stream's subjects (`agilepm nats-authorization` prints the server's side).
    #[arg(long, env = "AGILEPM_NATS_USER", requires = "nats_password")]
    pub nats_user: Option<String>,
    /// That user's password.
    #[arg(long, env = "AGILEPM_NATS_PASSWORD", hide_env_values = true, value_parser = parse_secret, requires = "nats_user")]
    pub nats_password: Option<SecretString>,
    /// CA (PEM) that signed the NATS servers' certificates. Setting it requires TLS, as a
    /// `tls://` URL does: a server that offers none is refused.
    #[arg(long, env = "AGILEPM_NATS_CA_FILE")]
    pub nats_ca_file: Option<PathBuf>,
}

/// Where a consumer reads a peer's events from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FeedSource {
    /// The peer's own gRPC event feed.
    #[default]
    Grpc,
    /// The peer's JetStream stream.
    Nats,
}

impl NatsArgs {
    /// The configuration these flags describe.
    pub fn resolve(&self) -> anyhow::Result<NatsConfig> {
        let url = self.nats_url.clone().filter(|url| !url.trim().is_empty());
        anyhow::ensure!(
            !(self.feed == FeedSource::Nats && url.is_none()),
            "AGILEPM_FEED=nats needs AGILEPM_NATS_URL"
        );
        anyhow::ensure!(
            (1..=5).contains(&self.nats_stream_replicas),
            "AGILEPM_NATS_STREAM_REPLICAS: {} is outside 1 to 5",
            self.nats_stream_replicas
        );
        anyhow::ensure!(
            self.nats_duplicate_window_secs >= 1,
            "AGILEPM_NATS_DUPLICATE_WINDOW_SECS must be at least 1"
        );
        Ok(NatsConfig {
            url,
            stream_replicas: self.nats_stream_replicas,
            duplicate_window: std::time::Duration::from_secs(self.nats_duplicate_window_secs),
            max_age: std::time::Duration::from_secs(self.nats_max_age_secs.max(60)),
            ack_wait: std::time::Duration::from_millis(self.nats_ack_wait_ms.max(100)),
            feed: self.feed,
            credentials: self
                .nats_user
                .clone()
                .zip(self.nats_password.clone())
                .map(|(user, password)| NatsCredentials { user, password }),
            ca_file: self.nats_ca_file.clone(),
        })
    }
}

/// Resolved NATS settings.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// The servers, or `None` when NATS is not used.
    pub url: Option<String>,
    /// Replicas of each stream.
    pub stream_replicas: usize,
    /// JetStream's duplicate window.
    pub duplicate_window: std::time::Duration,
    /// How long a stream keeps events.
    pub max_age: std::time::Duration,
    /// How long a consumer may hold a message unacknowledged.
    pub ack_wait: std::time::Duration,
    /// Where the coordinator reads task events.
    pub feed: FeedSource,
    /// Who this service is to the NATS servers, if they require it.
    pub credentials: Option<NatsCredentials>,
    /// The CA that signed the servers' certificates (TLS required when set).
    pub ca_file: Option<PathBuf>,
}

/// A NATS user and password (the password never reaches a log: `Debug` redacts it).
#[derive(Debug, Clone)]
pub struct NatsCredentials {
    /// The user name.
    pub user: String,
    /// Its password.
    pub password: SecretString,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: None,
            stream_replicas: 1,
            duplicate_window: std::time::Duration::from_secs(120),
            max_age: std::time::Duration::from_secs(7 * 24 * 3600),
            ack_wait: std::time::Duration::from_secs(30),
            feed: FeedSource::Grpc,
            credentials: None,
            ca_file: None,
        }
    }
}

/// Endpoints (`http://host:port`) of the peer services.
#[derive(Debug, Clone)]
pub struct Peers {
    /// The backlog-item service.
    pub backlog_item: String,
    /// The task service.
    pub task: String,
    /// The planning service.
    pub planning: String,
}

/// TLS settings. A server speaks TLS when given a certificate and key; a client uses TLS
/// for peers whose endpoint is `https://`.
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// This server's certificate chain (PEM); re-read when it changes or on SIGHUP.
    #[arg(long, env = "AGILEPM_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// This server's private key (PEM).
    #[arg(long, env = "AGILEPM_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): mutual TLS.
    #[arg(long, env = "AGILEPM_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// The CA (PEM) that signed the peers' server certificates.
    #[arg(long, env = "AGILEPM_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// The certificate (PEM) this service presents to peers that require one; defaults to
    /// the server certificate.
    #[arg(long, env = "AGILEPM_TLS_CLIENT_CERT", requires = "tls_client_key")]
    pub tls_client_cert: Option<PathBuf>,
    /// Its private key (PEM); defaults to the server key.
    #[arg(long, env = "AGILEPM_TLS_CLIENT_KEY", requires = "tls_client_cert")]
    pub tls_client_key: Option<PathBuf>,
}

/// Resolved TLS settings.
#[derive(Debug, Clone, Default)]
pub struct TlsConfig {
    /// The server side, when it speaks TLS.
    pub server: Option<ServerTlsFiles>,
    /// The client side, for calls to `https://` peers.
    pub client: ClientTlsFiles,
}

impl TlsArgs {
    /// The settings these flags describe.
    pub fn resolve(&self) -> anyhow::Result<TlsConfig> {
        let server = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(ServerTlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            }),
            (None, None) => None,
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        };
        // A service presents its server certificate to peers unless told otherwise, as
        // service meshes do (the certificate then carries both server and client use).
        let (cert, key) = match (&self.tls_client_cert, &self.tls_client_key, &server) {
            (Some(cert), Some(key), _) => (Some(cert.clone()), Some(key.clone())),
            (None, None, Some(server)) => (Some(server.cert.clone()), Some(server.key.clone())),
            _ => (None, None),
        };
        Ok(TlsConfig {
            server,
            client: ClientTlsFiles {
                ca: self.tls_ca.clone(),
                cert,
                key,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        auth: AuthArgs,
    }

    #[test]
    fn a_required_key_that_is_missing_stops_the_start() {
        let open = Cli::parse_from(["x"]).auth.resolve().unwrap();
        assert!(open.development);
        let required = Cli::parse_from(["x", "--require-auth"]).auth.resolve();
        assert!(required.is_err());
        let keyed = Cli::parse_from([
            "x",
            "--require-auth",
            "--auth-secret",
            "kV8rQ2mZ7xW4nB9pL3tY6hJ1sD5gF0cAx",
        ])
        .auth
        .resolve()
        .unwrap();
        assert!(!keyed.development);
        let weak = Cli::parse_from(["x", "--auth-secret", "change-me"])
            .auth
            .resolve();
        assert!(weak.is_err());
    }
}
