//! Who is calling, for which tenant, and whether they may.
//!
//! | module | holds |
//! |---|---|
//! | [`identity`] | roles and the authenticated [`Caller`] |
//! | [`keys`] | the keys tokens are verified with: shared secret, JWKS file reloaded on change |
//! | [`tokens`] | JWT claims, minting, the credentials clients send |
//! | [`authenticate`] | `authorization` header → [`Caller`] |
//! | [`access`] | the role table: which roles and services may call which RPC |
//! | [`layer`] | the tower layer that runs both before any handler |
//!
//! A service is configured by [`AuthConfig`]: production mode needs a key (a shared secret
//! of at least 32 bytes, or a JWKS file plus each service's own signing key); development
//! mode (no key) accepts unverified tenant tokens for tenant roles only, while the
//! services still prove who they are to each other with a random per-run secret.

pub mod access;
pub mod authenticate;
pub mod identity;
pub mod keys;
pub mod layer;
pub mod tokens;

use std::path::PathBuf;
use std::time::Duration;

use rand::RngCore as _;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use tonic::Request;
use tonic::metadata::MetadataValue;

pub use authenticate::Authenticator;
pub use identity::{ACTOR_HEADER, Caller, Role, TENANT_HEADER, acting_subject};
pub use tokens::{Credentials, Signer, TokenSpec};

use crate::domain::error::{AppError, AppResult};
use crate::domain::service_name::ServiceName;
use keys::KeySet;

/// Reads the [`Caller`] the authentication layer stored in the request.
pub fn caller<T>(request: &Request<T>) -> AppResult<Caller> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| {
            AppError::Internal("request reached a handler without authentication".into())
        })
}

/// A request to a peer acting for `tenant` (services span tenants and name one per call),
/// and for the person acting in the request being handled, if any, so that the peer
/// records the change as theirs.
pub fn act_for<T>(tenant: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = MetadataValue::try_from(tenant) {
        request.metadata_mut().insert(TENANT_HEADER, value);
    }
    if let Some(actor) = identity::acting_subject().filter(|a| !a.is_empty())
        && let Ok(value) = MetadataValue::try_from(actor)
    {
        request.metadata_mut().insert(ACTOR_HEADER, value);
    }
    request
}

/// How often a JWKS file is checked for changes.
pub const JWKS_REFRESH: Duration = Duration::from_secs(2);

/// How a service authenticates callers and proves its own identity to peers.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// The shared HS256 secret: verifies tokens without `kid` and signs service tokens
    /// unless a signing key is given.
    pub secret: Option<SecretString>,
    /// A JWKS file whose keys verify tokens with a `kid`.
    pub jwks_path: Option<PathBuf>,
    /// This service's own private key (PEM) and the `kid` it is published under.
    pub signing_key: Option<(PathBuf, String)>,
    /// Required `iss` claim.
    pub issuer: Option<String>,
    /// Required `aud` claim.
    pub audience: Option<String>,
    /// Development mode: unverified tenant tokens accepted (tenant roles only).
    pub development: bool,
}

impl AuthConfig {
    /// Development mode with a fresh random secret for the services' own tokens. Share one
    /// value between services that must call each other.
    pub fn development() -> AuthConfig {
        AuthConfig {
            development: true,
            ..AuthConfig::with_random_secret()
        }
    }

    /// Production mode with a fresh random secret (64 hex characters): for a set of
    /// processes started together that must verify each other, such as the benchmark's.
    pub fn with_random_secret() -> AuthConfig {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        AuthConfig {
            secret: Some(SecretString::from(hex::encode(bytes))),
            jwks_path: None,
            signing_key: None,
            issuer: None,
            audience: None,
            development: false,
        }
    }

    /// Production mode from configured keys; development mode when none is configured.
    /// Refuses a short or placeholder secret, and a key set without a way for the
    /// services to sign their own tokens.
    pub fn from_settings(
        secret: Option<SecretString>,
        jwks_path: Option<PathBuf>,
        signing_key: Option<(PathBuf, String)>,
        issuer: Option<String>,
        audience: Option<String>,
    ) -> anyhow::Result<AuthConfig> {
        if secret.is_none() && jwks_path.is_none() {
            if signing_key.is_some() {
                anyhow::bail!("AGILEPM_AUTH_SIGNING_KEY needs AGILEPM_AUTH_JWKS to verify with");
            }
            return Ok(AuthConfig::development());
        }
        if let Some(secret) = &secret {
            keys::check_secret_strength(secret)?;
        }
        if secret.is_none() && signing_key.is_none() {
            anyhow::bail!(
                "with AGILEPM_AUTH_JWKS and no AGILEPM_AUTH_SECRET, each service needs its own \
                 AGILEPM_AUTH_SIGNING_KEY (and AGILEPM_AUTH_SIGNING_KID) to call its peers"
            );
        }
        Ok(AuthConfig {
            secret,
            jwks_path,
            signing_key,
            issuer,
            audience,
            development: false,
        })
    }

    /// The authenticator for incoming calls; a JWKS file is watched until `shutdown`.
    pub fn authenticator(&self, shutdown: &CancellationToken) -> anyhow::Result<Authenticator> {
        let keys = KeySet::load(self.secret.as_ref(), self.jwks_path.as_deref())?;
        keys.watch(JWKS_REFRESH, shutdown.clone());
        Ok(Authenticator::new(
            keys,
            self.development,
            self.issuer.clone(),
            self.audience.clone(),
        ))
    }

    /// The signer of tokens this configuration can mint: the service's own key, or the
    /// shared secret.
    pub fn signer(&self) -> anyhow::Result<Signer> {
        let signer = match (&self.signing_key, &self.secret) {
            (Some((path, kid)), _) => Signer::from_pem_file(path, kid)?,
            (None, Some(secret)) => Signer::shared(secret)?,
            (None, None) => anyhow::bail!("no key to sign tokens with"),
        };
        Ok(signer.with_issuer_and_audience(self.issuer.clone(), self.audience.clone()))
    }

    /// The credentials `service` presents to its peers: its own identity, renewed before
    /// it expires.
    pub fn service_credentials(&self, service: ServiceName) -> anyhow::Result<Credentials> {
        Credentials::minted(
            self.signer()?,
            TokenSpec::service(service),
            tokens::SERVICE_TOKEN_TTL,
        )
    }
}
