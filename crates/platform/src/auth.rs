//! Who is calling, and for which tenant.
//!
//! Every request carries `authorization: Bearer <token>`. A token names one tenant, or
//! `*` for internal services (the coordinator, service-to-service calls) that are granted
//! every tenant. Internal callers acting for one tenant say which in the
//! `x-agilepm-tenant` header.
//!
//! * **Signed mode** (`AGILEPM_AUTH_SECRET` set): a token is `<tenant>.<hmac>`, where
//!   `hmac` is the hex HMAC-SHA256 of the tenant under the secret. Anything else is
//!   `UNAUTHENTICATED`.
//! * **Development mode** (no secret): the token *is* the tenant, unverified, and a missing
//!   header means tenant `default`. Servers log a loud warning at start-up.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Status};

use crate::error::{AppError, AppResult};

/// Header an all-tenants caller uses to name the tenant it acts for.
pub const TENANT_HEADER: &str = "x-agilepm-tenant";
/// The tenant name that grants every tenant.
pub const ALL_TENANTS: &str = "*";
/// The tenant development-mode requests without a token belong to.
pub const DEFAULT_DEV_TENANT: &str = "default";

/// The authenticated caller, stored in each request's extensions by [`Authenticator`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The tenant the request acts for, if it names one.
    tenant: Option<String>,
    /// Whether the caller may read every tenant's data (event feeds).
    all_tenants: bool,
}

impl Caller {
    /// The tenant this request acts for. Tenant-scoped operations call this; an internal
    /// caller that named no tenant gets `INVALID_ARGUMENT`.
    pub fn tenant(&self) -> AppResult<&str> {
        self.tenant.as_deref().ok_or_else(|| {
            AppError::invalid(
                TENANT_HEADER,
                "internal callers must name the tenant they act for",
            )
        })
    }

    /// Whether the caller may see `tenant`'s data.
    pub fn may_see(&self, tenant: &str) -> bool {
        self.all_tenants || self.tenant.as_deref() == Some(tenant)
    }

    /// Whether the caller is granted every tenant.
    pub fn is_all_tenants(&self) -> bool {
        self.all_tenants
    }
}

/// Reads the [`Caller`] a server interceptor stored in the request.
pub fn caller<T>(request: &Request<T>) -> AppResult<Caller> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| AppError::Internal("service registered without the authenticator".into()))
}

/// Server-side interceptor that authenticates each request.
#[derive(Clone)]
pub struct Authenticator {
    secret: Option<std::sync::Arc<[u8]>>,
}

impl Authenticator {
    /// Signed mode with `secret`, or development mode with `None`.
    pub fn new(secret: Option<&str>) -> Authenticator {
        Authenticator {
            secret: secret.map(|s| std::sync::Arc::from(s.as_bytes())),
        }
    }

    /// Whether requests are accepted unverified.
    pub fn is_development_mode(&self) -> bool {
        self.secret.is_none()
    }

    /// Authenticates the request's metadata.
    pub fn authenticate(&self, metadata: &MetadataMap) -> AppResult<Caller> {
        let token = match metadata.get("authorization") {
            Some(value) => {
                let value = value
                    .to_str()
                    .map_err(|_| AppError::Unauthenticated("authorization: not ASCII".into()))?;
                let token = value.strip_prefix("Bearer ").ok_or_else(|| {
                    AppError::Unauthenticated("authorization: expected `Bearer <token>`".into())
                })?;
                Some(token.trim())
            }
            None => None,
        };
        let granted = match (&self.secret, token) {
            (None, None) => DEFAULT_DEV_TENANT.to_owned(),
            (None, Some(token)) => token.to_owned(),
            (Some(_), None) => {
                return Err(AppError::Unauthenticated(
                    "authorization: bearer token required".into(),
                ));
            }
            (Some(secret), Some(token)) => verify(secret, token)?,
        };
        if granted == ALL_TENANTS {
            let acting = match metadata.get(TENANT_HEADER) {
                Some(value) => Some(parse_tenant(value.to_str().unwrap_or(""))?),
                None => None,
            };
            return Ok(Caller {
                tenant: acting,
                all_tenants: true,
            });
        }
        let tenant = parse_tenant(&granted)?;
        if let Some(acting) = metadata.get(TENANT_HEADER)
            && acting.to_str().ok() != Some(tenant.as_str())
        {
            return Err(AppError::PermissionDenied(format!(
                "{TENANT_HEADER}: a token for tenant {tenant} cannot act for another tenant"
            )));
        }
        Ok(Caller {
            tenant: Some(tenant),
            all_tenants: false,
        })
    }
}

impl tonic::service::Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let caller = self.authenticate(request.metadata())?;
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// Builds a signed token for `tenant` (or [`ALL_TENANTS`]).
pub fn sign_token(secret: &str, tenant: &str) -> String {
    format!("{tenant}.{}", hex::encode(mac(secret.as_bytes(), tenant)))
}

/// The token a service uses for its own calls to peers: all tenants, signed if a secret is
/// configured.
pub fn internal_token(secret: Option<&str>) -> String {
    match secret {
        Some(secret) => sign_token(secret, ALL_TENANTS),
        None => ALL_TENANTS.to_owned(),
    }
}

/// Adds the `x-agilepm-tenant` header so an all-tenants caller acts for `tenant`.
pub fn act_for<T>(tenant: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = MetadataValue::try_from(tenant) {
        request.metadata_mut().insert(TENANT_HEADER, value);
    }
    request
}

fn mac(secret: &[u8], tenant: &str) -> Vec<u8> {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(tenant.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn verify(secret: &[u8], token: &str) -> AppResult<String> {
    let (tenant, signature) = token
        .rsplit_once('.')
        .ok_or_else(|| AppError::Unauthenticated("authorization: malformed token".into()))?;
    let signature = hex::decode(signature)
        .map_err(|_| AppError::Unauthenticated("authorization: malformed token".into()))?;
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(tenant.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| AppError::Unauthenticated("authorization: invalid token".into()))?;
    Ok(tenant.to_owned())
}

fn parse_tenant(tenant: &str) -> AppResult<String> {
    let valid = !tenant.is_empty()
        && tenant.len() <= 64
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(tenant.to_owned())
    } else {
        Err(AppError::Unauthenticated(
            "tenant ids are 1-64 characters of letters, digits, '-' and '_'".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(pairs: &[(&'static str, &str)]) -> MetadataMap {
        let mut map = MetadataMap::new();
        for (key, value) in pairs {
            map.insert(*key, value.parse().expect("ascii"));
        }
        map
    }

    #[test]
    fn development_mode_takes_the_token_as_tenant() {
        let auth = Authenticator::new(None);
        let caller = auth
            .authenticate(&metadata(&[("authorization", "Bearer acme")]))
            .unwrap();
        assert_eq!(caller.tenant().unwrap(), "acme");
        assert!(!caller.may_see("other"));
        let anonymous = auth.authenticate(&MetadataMap::new()).unwrap();
        assert_eq!(anonymous.tenant().unwrap(), DEFAULT_DEV_TENANT);
    }

    #[test]
    fn signed_mode_accepts_only_valid_signatures() {
        let auth = Authenticator::new(Some("s3cret"));
        let good = format!("Bearer {}", sign_token("s3cret", "acme"));
        assert_eq!(
            auth.authenticate(&metadata(&[("authorization", &good)]))
                .unwrap()
                .tenant()
                .unwrap(),
            "acme"
        );
        let forged = format!("Bearer {}", sign_token("guess", "acme"));
        assert!(matches!(
            auth.authenticate(&metadata(&[("authorization", &forged)])),
            Err(AppError::Unauthenticated(_))
        ));
        assert!(auth.authenticate(&MetadataMap::new()).is_err());
    }

    #[test]
    fn all_tenant_callers_act_for_a_named_tenant() {
        let auth = Authenticator::new(Some("k"));
        let token = format!("Bearer {}", internal_token(Some("k")));
        let caller = auth
            .authenticate(&metadata(&[
                ("authorization", &token),
                (TENANT_HEADER, "acme"),
            ]))
            .unwrap();
        assert!(caller.is_all_tenants());
        assert_eq!(caller.tenant().unwrap(), "acme");
        let feed_reader = auth
            .authenticate(&metadata(&[("authorization", &token)]))
            .unwrap();
        assert!(feed_reader.tenant().is_err());
        assert!(feed_reader.may_see("anyone"));
    }

    #[test]
    fn a_tenant_token_cannot_act_for_another_tenant() {
        let auth = Authenticator::new(None);
        let result = auth.authenticate(&metadata(&[
            ("authorization", "Bearer acme"),
            (TENANT_HEADER, "globex"),
        ]));
        assert!(matches!(result, Err(AppError::PermissionDenied(_))));
    }
}
