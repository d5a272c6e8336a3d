//! Bearer tokens: the claims agilepm reads from a JWT, minting them (development, tests,
//! and each service's own short-lived identity), and the credentials a client sends.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tonic::metadata::{Ascii, MetadataValue};

use crate::domain::service_name::ServiceName;
use crate::wire::auth::identity::{Role, service_subject};

/// The claims of an agilepm token. `sub`, `exp` and `iat` are always set; `tenant` is
/// absent only for callers that span tenants (services, system operators).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Who the token speaks for: a person's id, or `service:<name>`.
    pub sub: String,
    /// The tenant a person belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Role names (see [`Role::as_str`]); unknown names grant nothing.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not valid before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// What a minted token says: who, for which tenant, with which roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpec {
    /// The subject.
    pub subject: String,
    /// The tenant, or `None` for callers spanning tenants.
    pub tenant: Option<String>,
    /// The roles.
    pub roles: Vec<Role>,
}

impl TokenSpec {
    /// The identity of one of our services.
    pub fn service(service: ServiceName) -> TokenSpec {
        TokenSpec {
            subject: service_subject(service),
            tenant: None,
            roles: vec![Role::Service],
        }
    }

    /// A person of `tenant` with `roles`.
    pub fn person(subject: &str, tenant: &str, roles: &[Role]) -> TokenSpec {
        TokenSpec {
            subject: subject.to_owned(),
            tenant: Some(tenant.to_owned()),
            roles: roles.to_vec(),
        }
    }

    /// An operator of the whole system.
    pub fn system_operator(subject: &str) -> TokenSpec {
        TokenSpec {
            subject: subject.to_owned(),
            tenant: None,
            roles: vec![Role::Operator],
        }
    }
}

/// Reads a private key of one algorithm family from PEM.
type ParsePem = fn(&[u8]) -> jsonwebtoken::errors::Result<EncodingKey>;

/// Signs tokens with one key.
#[derive(Clone)]
pub struct Signer {
    key: EncodingKey,
    algorithm: Algorithm,
    kid: Option<String>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl Signer {
    /// HS256 with the shared secret (tokens carry no `kid`).
    pub fn shared(secret: &SecretString) -> anyhow::Result<Signer> {
        Ok(Signer {
            key: EncodingKey::from_secret(secret.expose_secret().as_bytes())
                .map_err(|e| anyhow::anyhow!("shared secret: {e}"))?,
            algorithm: Algorithm::HS256,
            kid: None,
            issuer: None,
            audience: None,
        })
    }

    /// A private key in PEM (Ed25519, P-256 or RSA), published in the verifiers' key set
    /// under `kid`.
    pub fn from_pem_file(path: &Path, kid: &str) -> anyhow::Result<Signer> {
        let pem = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read signing key {}: {e}", path.display()))?;
        let attempts: [(Algorithm, ParsePem); 3] = [
            (Algorithm::EdDSA, EncodingKey::from_ed_pem),
            (Algorithm::ES256, EncodingKey::from_ec_pem),
            (Algorithm::RS256, EncodingKey::from_rsa_pem),
        ];
        for (algorithm, parse) in attempts {
            if let Ok(key) = parse(&pem) {
                return Ok(Signer {
                    key,
                    algorithm,
                    kid: Some(kid.to_owned()),
                    issuer: None,
                    audience: None,
                });
            }
        }
        anyhow::bail!(
            "signing key {} is not an Ed25519, P-256 or RSA private key in PEM",
            path.display()
        )
    }

    /// Adds `iss` and `aud` claims to every token.
    pub fn with_issuer_and_audience(
        mut self,
        issuer: Option<String>,
        audience: Option<String>,
    ) -> Signer {
        self.issuer = issuer;
        self.audience = audience;
        self
    }

    /// A token for `spec`, valid from now for `ttl`.
    pub fn mint(&self, spec: &TokenSpec, ttl: Duration) -> anyhow::Result<String> {
        self.mint_at(spec, ttl, wall_clock_secs()?)
    }

    /// A token for `spec`, valid for `ttl` from `now` (Unix seconds) as the wall clock
    /// says: for callers whose clock is not the verifier's (tests under a shifted clock).
    pub fn mint_at(&self, spec: &TokenSpec, ttl: Duration, now: u64) -> anyhow::Result<String> {
        let claims = Claims {
            sub: spec.subject.clone(),
            tenant: spec.tenant.clone(),
            roles: spec.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            exp: now + ttl.as_secs().max(1),
            nbf: Some(now),
            iat: Some(now),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        let mut header = Header::new(self.algorithm);
        header.kid = self.kid.clone();
        Ok(jsonwebtoken::encode(&header, &claims, &self.key)?)
    }
}

/// The wall clock, in Unix seconds: the clock tokens are verified by.
fn wall_clock_secs() -> anyhow::Result<u64> {
    Ok(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())
}

/// How long a service's own identity token lives. Short, so a leaked one is worth little;
/// renewed at half-life, so a call never carries one about to expire.
pub const SERVICE_TOKEN_TTL: Duration = Duration::from_secs(600);

/// What a client sends as `authorization`: a fixed token, or tokens minted on demand and
/// renewed before they expire.
#[derive(Clone)]
pub enum Credentials {
    /// One token for the client's whole life (CLI, bench, tests).
    Fixed(MetadataValue<Ascii>),
    /// Minted from a key, renewed at half-life (a service's own identity).
    Minted(Arc<MintedCredentials>),
}

/// Tokens minted on demand for one identity.
pub struct MintedCredentials {
    signer: Signer,
    spec: TokenSpec,
    ttl: Duration,
    /// The token and when it was issued (Unix seconds, by the wall clock).
    current: RwLock<(MetadataValue<Ascii>, u64)>,
}

impl Credentials {
    /// `Bearer <token>`, fixed.
    pub fn fixed(token: &str) -> anyhow::Result<Credentials> {
        Ok(Credentials::Fixed(MetadataValue::try_from(format!(
            "Bearer {token}"
        ))?))
    }

    /// Tokens for `spec` minted with `signer`, each valid for `ttl`.
    pub fn minted(signer: Signer, spec: TokenSpec, ttl: Duration) -> anyhow::Result<Credentials> {
        let issued = wall_clock_secs()?;
        let first = bearer(&signer, &spec, ttl, issued)?;
        Ok(Credentials::Minted(Arc::new(MintedCredentials {
            signer,
            spec,
            ttl,
            current: RwLock::new((first, issued)),
        })))
    }

    /// The `authorization` value to send now.
    pub fn authorization(&self) -> MetadataValue<Ascii> {
        match self {
            Credentials::Fixed(value) => value.clone(),
            Credentials::Minted(minted) => minted.authorization(),
        }
    }
}

impl MintedCredentials {
    /// Whether a token issued at `issued` is still good to send at `now` (both Unix
    /// seconds by the wall clock). Judged by the wall clock, the verifier's: a monotonic
    /// timer would keep sending a token the verifier's clock says has expired after the
    /// wall clock stepped forward (a laptop resumed, an NTP step), or is not yet valid
    /// after it stepped back, and every call between the services would be refused for
    /// minutes. So a token is renewed at half its life, and at once when the clock is
    /// found before its issue.
    fn fresh(&self, issued: u64, now: u64) -> bool {
        now >= issued && now - issued < self.ttl.as_secs() / 2
    }

    fn authorization(&self) -> MetadataValue<Ascii> {
        let Ok(now) = wall_clock_secs() else {
            return self
                .current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .0
                .clone();
        };
        {
            let current = self.current.read().unwrap_or_else(|p| p.into_inner());
            if self.fresh(current.1, now) {
                return current.0.clone();
            }
        }
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if !self.fresh(current.1, now) {
            match bearer(&self.signer, &self.spec, self.ttl, now) {
                Ok(value) => *current = (value, now),
                // Minting with a key that minted before cannot fail short of a broken
                // clock; keep the old token and say so.
                Err(error) => tracing::error!(
                    subject = %self.spec.subject,
                    error = %format!("{error:#}"),
                    "cannot renew this service's token; sending the current one"
                ),
            }
        }
        current.0.clone()
    }
}

fn bearer(
    signer: &Signer,
    spec: &TokenSpec,
    ttl: Duration,
    now: u64,
) -> anyhow::Result<MetadataValue<Ascii>> {
    Ok(MetadataValue::try_from(format!(
        "Bearer {}",
        signer.mint_at(spec, ttl, now)?
    ))?)
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        match self {
            Credentials::Fixed(_) => f.write_str("Credentials::Fixed(..)"),
            Credentials::Minted(minted) => {
                write!(f, "Credentials::Minted({})", minted.spec.subject)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_token_is_renewed_by_the_wall_clock_either_way_it_steps() {
        let signer = Signer::shared(&"s".repeat(40).into()).unwrap();
        let Credentials::Minted(minted) = Credentials::minted(
            signer,
            TokenSpec::service(ServiceName::Coordinator),
            Duration::from_secs(600),
        )
        .unwrap() else {
            panic!("minted credentials");
        };
        let issued = 1_000_000;
        assert!(minted.fresh(issued, issued));
        assert!(minted.fresh(issued, issued + 299));
        assert!(!minted.fresh(issued, issued + 300), "half-life");
        assert!(
            !minted.fresh(issued, issued + 3 * 3600),
            "stepped forward 3 h"
        );
        assert!(!minted.fresh(issued, issued - 86_400), "stepped back a day");
    }
}
