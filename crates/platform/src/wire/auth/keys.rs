//! The keys tokens are verified with: a shared HS256 secret for small deployments, and a
//! JSON Web Key Set (JWKS) file for an identity provider, chosen by the token's `kid`.
//!
//! Rotation: publish the new key in the set beside the old one, start issuing with the new
//! `kid`, and remove the old key once every token it signed has expired. The set file is
//! re-read when it changes, so no service restarts. A set that fails to parse is refused
//! loudly and the previous set stays in force (a half-written file never locks everyone out).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

/// Shortest shared secret accepted outside development mode: 32 bytes, the HMAC-SHA256
/// block's worth of entropy when the secret is random.
pub const MIN_SECRET_BYTES: usize = 32;

/// Words that mark a secret copied from an example rather than generated.
const PLACEHOLDER_MARKERS: [&str; 8] = [
    "change-me",
    "changeme",
    "change_me",
    "replace-me",
    "placeholder",
    "example",
    "insecure",
    "password",
];

/// Refuses a secret that is too short or obviously a placeholder.
pub fn check_secret_strength(secret: &SecretString) -> anyhow::Result<()> {
    let value = secret.expose_secret();
    if value.len() < MIN_SECRET_BYTES {
        anyhow::bail!(
            "AGILEPM_AUTH_SECRET is {} bytes; it must be at least {MIN_SECRET_BYTES} random bytes \
             (e.g. `openssl rand -base64 48`)",
            value.len()
        );
    }
    let lower = value.to_ascii_lowercase();
    if let Some(marker) = PLACEHOLDER_MARKERS.iter().find(|m| lower.contains(*m)) {
        anyhow::bail!("AGILEPM_AUTH_SECRET contains {marker:?}: it looks like a placeholder");
    }
    let first = value.as_bytes()[0];
    if value.bytes().all(|b| b == first) {
        anyhow::bail!("AGILEPM_AUTH_SECRET repeats one character");
    }
    Ok(())
}

/// A key that may verify tokens, with the algorithms it may verify.
#[derive(Clone)]
pub struct VerifyingKey {
    /// The key material.
    pub key: DecodingKey,
    /// Algorithms of the key's own family only, so a token cannot pick an algorithm that
    /// turns a public key into an HMAC secret.
    pub algorithms: Vec<Algorithm>,
}

/// Every key tokens may be verified with.
#[derive(Clone)]
pub struct KeySet {
    shared: Option<VerifyingKey>,
    by_kid: Arc<RwLock<Arc<HashMap<String, VerifyingKey>>>>,
    jwks_path: Option<PathBuf>,
}

impl KeySet {
    /// Keys from a shared secret and/or a JWKS file (read now; a file that cannot be read
    /// or parsed stops the start).
    pub fn load(secret: Option<&SecretString>, jwks_path: Option<&Path>) -> anyhow::Result<KeySet> {
        let shared = match secret {
            Some(secret) => Some(VerifyingKey {
                key: DecodingKey::from_secret(secret.expose_secret().as_bytes())
                    .map_err(|e| anyhow::anyhow!("AGILEPM_AUTH_SECRET: {e}"))?,
                algorithms: vec![Algorithm::HS256],
            }),
            None => None,
        };
        let by_kid = match jwks_path {
            Some(path) => read_jwks(path)?,
            None => HashMap::new(),
        };
        Ok(KeySet {
            shared,
            by_kid: Arc::new(RwLock::new(Arc::new(by_kid))),
            jwks_path: jwks_path.map(Path::to_path_buf),
        })
    }

    /// The key for a token with `kid` (a key-set key), or without one (the shared secret).
    pub fn find(&self, kid: Option<&str>) -> Option<VerifyingKey> {
        match kid {
            None => self.shared.clone(),
            Some(kid) => self
                .by_kid
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .get(kid)
                .cloned(),
        }
    }

    /// Re-reads the JWKS file whenever its modification time or size changes, every
    /// `every`, until `shutdown`.
    pub fn watch(&self, every: Duration, shutdown: CancellationToken) {
        let Some(path) = self.jwks_path.clone() else {
            return;
        };
        let by_kid = self.by_kid.clone();
        tokio::spawn(async move {
            let mut seen = file_stamp(&path);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
                let stamp = file_stamp(&path);
                if stamp == seen {
                    continue;
                }
                seen = stamp;
                match read_jwks(&path) {
                    Ok(keys) => {
                        let kids: Vec<&String> = keys.keys().collect();
                        tracing::info!(path = %path.display(), ?kids, "token key set reloaded");
                        *by_kid.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
                    }
                    Err(error) => tracing::error!(
                        path = %path.display(),
                        error = %format!("{error:#}"),
                        "token key set changed but cannot be used; the previous keys stay in force"
                    ),
                }
            }
        });
    }
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

/// Reads a JWKS file into keys by `kid`. Every key must have a `kid`; keys of unsupported
/// kinds are refused rather than skipped, so a typo does not silently drop a key.
pub fn read_jwks(path: &Path) -> anyhow::Result<HashMap<String, VerifyingKey>> {
    let text = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("cannot read key set {}: {e}", path.display()))?;
    let set: JwkSet = serde_json::from_slice(&text)
        .map_err(|e| anyhow::anyhow!("key set {} is not a JWKS: {e}", path.display()))?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let kid = jwk
            .common
            .key_id
            .clone()
            .ok_or_else(|| anyhow::anyhow!("key set {}: a key has no kid", path.display()))?;
        let algorithms = match &jwk.algorithm {
            AlgorithmParameters::OctetKey(_) => vec![Algorithm::HS256],
            AlgorithmParameters::RSA(_) => vec![Algorithm::RS256, Algorithm::PS256],
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => vec![Algorithm::ES256],
                EllipticCurve::P384 => vec![Algorithm::ES384],
                _ => anyhow::bail!("key {kid}: unsupported curve"),
            },
            AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
            _ => anyhow::bail!("key {kid}: unsupported key type"),
        };
        if let AlgorithmParameters::OctetKey(_) = &jwk.algorithm
            && let Ok(key) = DecodingKey::from_jwk(jwk)
            && key.try_get_as_bytes().map(<[u8]>::len).unwrap_or(0) < MIN_SECRET_BYTES
        {
            anyhow::bail!("key {kid}: symmetric keys must be at least {MIN_SECRET_BYTES} bytes");
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| anyhow::anyhow!("key {kid}: {e}"))?;
        keys.insert(kid, VerifyingKey { key, algorithms });
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(value: &str) -> SecretString {
        SecretString::from(value.to_owned())
    }

    #[test]
    fn weak_and_placeholder_secrets_are_refused() {
        for weak in [
            "x",
            "change-me",
            "change-me-in-production-please-0123456789",
            &"a".repeat(40),
        ] {
            assert!(check_secret_strength(&secret(weak)).is_err(), "{weak}");
        }
        assert!(check_secret_strength(&secret("mZ3v9Qy8Lr2Kd7Wn4Tb6Xs1Hf5Gj0Pc8Ae3Ui")).is_ok());
    }

    #[test]
    fn a_key_set_needs_kids_and_strong_symmetric_keys() {
        let dir = tempfile_dir();
        let path = dir.join("jwks.json");
        std::fs::write(&path, r#"{"keys":[{"kty":"oct","k":"c2hvcnQ"}]}"#).unwrap();
        assert!(read_jwks(&path).is_err(), "no kid");
        std::fs::write(&path, r#"{"keys":[{"kty":"oct","kid":"a","k":"c2hvcnQ"}]}"#).unwrap();
        assert!(read_jwks(&path).is_err(), "too short");
        let long = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVoxMjM0NTY3ODkw";
        std::fs::write(
            &path,
            format!(r#"{{"keys":[{{"kty":"oct","kid":"a","k":"{long}"}}]}}"#),
        )
        .unwrap();
        let keys = read_jwks(&path).unwrap();
        assert_eq!(keys["a"].algorithms, vec![Algorithm::HS256]);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("agilepm-keys-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
