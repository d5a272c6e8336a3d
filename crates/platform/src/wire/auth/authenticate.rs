//! Turning a request's `authorization` header into a [`Caller`].
//!
//! * A JWT is verified against the [`KeySet`]: the shared secret for tokens without `kid`,
//!   the key set's key for tokens with one. `exp` is required, `nbf` honoured, both with
//!   [`LEEWAY_SECS`] of clock skew; `iss` and `aud` are required when configured.
//! * Service identities (`roles: ["service"]`, `sub: "service:<name>"`) signed by a key-set
//!   key must be signed by that service's own key (`kid` `service.<name>` or
//!   `service.<name>.<anything>`), and a `service.*` key signs nothing else, so one
//!   service's key cannot impersonate another. With the shared secret every holder can
//!   mint any identity: that is the trade-off of the small-deployment mode.
//! * In development mode (no key configured) a token that is not a JWT is taken, unverified,
//!   as a tenant id with the tenant roles (never operator, never all tenants), and a
//!   request without a token belongs to tenant `default`.

use http::HeaderMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{TokenData, Validation};

use crate::domain::error::{AppError, AppResult, shown};
use crate::domain::service_name::ServiceName;
use crate::wire::auth::identity::{
    ACTOR_HEADER, Caller, Role, TENANT_HEADER, parse_subject, parse_tenant,
};
use crate::wire::auth::keys::KeySet;
use crate::wire::auth::tokens::Claims;

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;
/// The tenant development-mode requests without a token belong to.
pub const DEFAULT_DEV_TENANT: &str = "default";
/// The subject of unverified development-mode callers.
pub const DEV_SUBJECT: &str = "anonymous";
/// Longest `authorization` value read; a JWT of ours is a few hundred bytes.
const MAX_AUTHORIZATION_BYTES: usize = 8 * 1024;

/// Verifies tokens and builds callers.
#[derive(Clone)]
pub struct Authenticator {
    keys: KeySet,
    development: bool,
    issuer: Option<String>,
    audience: Option<String>,
}

impl Authenticator {
    /// An authenticator over `keys`; `development` accepts unverified tenant tokens too.
    pub fn new(
        keys: KeySet,
        development: bool,
        issuer: Option<String>,
        audience: Option<String>,
    ) -> Authenticator {
        Authenticator {
            keys,
            development,
            issuer,
            audience,
        }
    }

    /// Whether unverified tenant tokens are accepted.
    pub fn is_development_mode(&self) -> bool {
        self.development
    }

    /// The caller `headers` authenticate.
    pub fn authenticate(&self, headers: &HeaderMap) -> AppResult<Caller> {
        let acting_for = match headers.get(TENANT_HEADER) {
            Some(value) => Some(
                value
                    .to_str()
                    .map_err(|_| AppError::invalid(TENANT_HEADER, "not ASCII"))
                    .and_then(|v| {
                        parse_tenant(v).map_err(|e| AppError::invalid(TENANT_HEADER, e.to_string()))
                    })?,
            ),
            None => None,
        };
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            if self.development {
                return person_acting(
                    DEV_SUBJECT.into(),
                    DEFAULT_DEV_TENANT.into(),
                    Role::TENANT_ROLES.to_vec(),
                    acting_for,
                );
            }
            return Err(AppError::Unauthenticated(
                "authorization: a bearer token is required".into(),
            ));
        };
        if value.len() > MAX_AUTHORIZATION_BYTES {
            return Err(AppError::Unauthenticated(format!(
                "authorization: {} bytes; at most {MAX_AUTHORIZATION_BYTES}",
                value.len()
            )));
        }
        let value = value
            .to_str()
            .map_err(|_| AppError::Unauthenticated("authorization: not ASCII".into()))?;
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => {
                return Err(AppError::Unauthenticated(
                    "authorization: expected `Bearer <token>`".into(),
                ));
            }
        };
        if token.split('.').count() != 3 {
            if self.development {
                let tenant = parse_tenant(token)?;
                return person_acting(
                    DEV_SUBJECT.into(),
                    tenant,
                    Role::TENANT_ROLES.to_vec(),
                    acting_for,
                );
            }
            return Err(AppError::Unauthenticated(
                "authorization: the bearer token is not a JWT".into(),
            ));
        }
        let (claims, kid) = self.verify(token)?;
        let caller = caller_from_claims(claims, kid.as_deref(), acting_for)?;
        match headers.get(ACTOR_HEADER) {
            None => Ok(caller),
            Some(_) if caller.service_name().is_none() => Err(AppError::PermissionDenied(format!(
                "{ACTOR_HEADER}: only agilepm's services may act for someone else"
            ))),
            Some(value) => {
                let subject = value
                    .to_str()
                    .ok()
                    .and_then(|v| parse_subject(v).ok())
                    .ok_or_else(|| {
                        AppError::invalid(ACTOR_HEADER, "1-128 printable ASCII characters")
                    })?;
                Ok(caller.on_behalf_of(Some(subject)))
            }
        }
    }

    fn verify(&self, token: &str) -> AppResult<(Claims, Option<String>)> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AppError::Unauthenticated("authorization: malformed JWT".into()))?;
        let key = self.keys.find(header.kid.as_deref()).ok_or_else(|| {
            AppError::Unauthenticated(match &header.kid {
                Some(kid) => format!("authorization: unknown signing key {}", shown(kid)),
                None => "authorization: tokens without kid are not accepted here".into(),
            })
        })?;
        let mut validation = Validation::new(key.algorithms[0]);
        validation.algorithms = key.algorithms.clone();
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &self.issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                validation.required_spec_claims.insert("iss".into());
            }
            None => validation.iss = None,
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        let TokenData { claims, .. } = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|error| {
                AppError::Unauthenticated(format!(
                    "authorization: {}",
                    match error.kind() {
                        ErrorKind::ExpiredSignature => "token expired",
                        ErrorKind::ImmatureSignature => "token not valid yet (nbf)",
                        ErrorKind::InvalidAudience => "token is for another audience",
                        ErrorKind::InvalidIssuer => "token is from another issuer",
                        ErrorKind::InvalidSignature => "invalid signature",
                        ErrorKind::InvalidAlgorithm => "algorithm not allowed for this key",
                        ErrorKind::MissingRequiredClaim(_) => "a required claim is missing",
                        _ => "invalid token",
                    }
                ))
            })?;
        Ok((claims, header.kid))
    }
}

fn caller_from_claims(
    claims: Claims,
    kid: Option<&str>,
    acting_for: Option<String>,
) -> AppResult<Caller> {
    let subject = parse_subject(&claims.sub)?;
    let roles: Vec<Role> = claims.roles.iter().filter_map(|r| Role::parse(r)).collect();
    let service_key = kid.and_then(|kid| kid.strip_prefix("service."));
    if roles.contains(&Role::Service) {
        let service = subject
            .strip_prefix("service:")
            .and_then(|name| ServiceName::ALL.into_iter().find(|s| s.as_str() == name))
            .ok_or_else(|| {
                AppError::Unauthenticated(format!(
                    "authorization: a service token's subject must be service:<name>, not {}",
                    shown(&subject)
                ))
            })?;
        if claims.tenant.is_some() || roles.len() != 1 {
            return Err(AppError::Unauthenticated(
                "authorization: a service token carries no tenant and no other role".into(),
            ));
        }
        if let Some(kid) = kid {
            let own = service_key.is_some_and(|rest| {
                rest == service.as_str()
                    || rest
                        .strip_prefix(service.as_str())
                        .is_some_and(|tail| tail.starts_with('.'))
            });
            if !own {
                return Err(AppError::Unauthenticated(format!(
                    "authorization: {subject} must be signed by its own key (kid service.{service}), not {}",
                    shown(kid)
                )));
            }
        }
        return Ok(Caller::service(service, acting_for));
    }
    if service_key.is_some() {
        return Err(AppError::Unauthenticated(
            "authorization: a service's key signs only that service's identity".into(),
        ));
    }
    match claims.tenant {
        Some(tenant) => {
            let tenant = parse_tenant(&tenant)?;
            person_acting(subject, tenant, roles, acting_for)
        }
        None if roles.contains(&Role::Operator) => Ok(Caller::system_operator(subject, acting_for)),
        None => Err(AppError::Unauthenticated(
            "authorization: the token names no tenant".into(),
        )),
    }
}

fn person_acting(
    subject: String,
    tenant: String,
    roles: Vec<Role>,
    acting_for: Option<String>,
) -> AppResult<Caller> {
    if let Some(acting) = acting_for
        && acting != tenant
    {
        return Err(AppError::PermissionDenied(format!(
            "{TENANT_HEADER}: a token for tenant {tenant} cannot act for another tenant"
        )));
    }
    Ok(Caller::person(subject, tenant, roles))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use secrecy::SecretString;

    use super::*;
    use crate::wire::auth::tokens::{Signer, TokenSpec};

    const SECRET: &str = "kV8rQ2mZ7xW4nB9pL3tY6hJ1sD5gF0cA";

    fn secret() -> SecretString {
        SecretString::from(SECRET.to_owned())
    }

    fn strict() -> Authenticator {
        Authenticator::new(
            KeySet::load(Some(&secret()), None).unwrap(),
            false,
            None,
            None,
        )
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (key, value) in pairs {
            map.insert(*key, value.parse().expect("ascii"));
        }
        map
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    #[test]
    fn development_mode_takes_a_plain_token_as_a_tenant_with_tenant_roles_only() {
        let auth = Authenticator::new(
            KeySet::load(Some(&secret()), None).unwrap(),
            true,
            None,
            None,
        );
        let caller = auth
            .authenticate(&headers(&[("authorization", "Bearer acme")]))
            .unwrap();
        assert_eq!(caller.tenant().unwrap(), "acme");
        assert!(!caller.is_all_tenants());
        assert!(!caller.has_role(Role::Operator));
        assert!(caller.has_role(Role::TeamMember));
        for refused in ["Bearer *", "Bearer bad tenant/../x"] {
            assert!(
                auth.authenticate(&headers(&[("authorization", refused)]))
                    .is_err(),
                "{refused}"
            );
        }
        let anonymous = auth.authenticate(&HeaderMap::new()).unwrap();
        assert_eq!(anonymous.tenant().unwrap(), DEFAULT_DEV_TENANT);
    }

    #[test]
    fn strict_mode_needs_a_verified_jwt_and_accepts_any_scheme_case() {
        let auth = strict();
        let token = Signer::shared(&secret())
            .unwrap()
            .mint(
                &TokenSpec::person("ann", "acme", &[Role::Viewer]),
                Duration::from_secs(60),
            )
            .unwrap();
        let caller = auth
            .authenticate(&headers(&[("authorization", &format!("bearer {token}"))]))
            .unwrap();
        assert_eq!(caller.subject(), "ann");
        assert!(caller.has_role(Role::Viewer));
        assert!(
            auth.authenticate(&headers(&[("authorization", "Bearer acme")]))
                .is_err()
        );
        assert!(auth.authenticate(&HeaderMap::new()).is_err());
        let forged = Signer::shared(&SecretString::from(
            "another-secret-of-32-bytes-or-more!".to_owned(),
        ))
        .unwrap()
        .mint(
            &TokenSpec::person("ann", "acme", &[Role::Viewer]),
            Duration::from_secs(60),
        )
        .unwrap();
        let error = auth
            .authenticate(&headers(&[("authorization", &bearer(&forged))]))
            .unwrap_err();
        assert_eq!(error.to_string(), "authorization: invalid signature");
    }

    #[test]
    fn expired_tokens_and_other_audiences_are_refused() {
        let signer = Signer::shared(&secret()).unwrap();
        let mut claims = Claims {
            sub: "ann".into(),
            tenant: Some("acme".into()),
            roles: vec!["viewer".into()],
            exp: jsonwebtoken::get_current_timestamp() - LEEWAY_SECS - 5,
            nbf: None,
            iat: None,
            iss: None,
            aud: None,
        };
        let encode = |claims: &Claims| {
            jsonwebtoken::encode(
                &jsonwebtoken::Header::default(),
                claims,
                &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
            )
            .unwrap()
        };
        let error = strict()
            .authenticate(&headers(&[("authorization", &bearer(&encode(&claims)))]))
            .unwrap_err();
        assert_eq!(error.to_string(), "authorization: token expired");

        claims.exp = jsonwebtoken::get_current_timestamp() + 60;
        claims.aud = Some("someone-else".into());
        let with_audience = Authenticator::new(
            KeySet::load(Some(&secret()), None).unwrap(),
            false,
            None,
            Some("agilepm".into()),
        );
        let error = with_audience
            .authenticate(&headers(&[("authorization", &bearer(&encode(&claims)))]))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "authorization: token is for another audience"
        );
        let ours = signer
            .with_issuer_and_audience(None, Some("agilepm".into()))
            .mint(
                &TokenSpec::person("ann", "acme", &[Role::Viewer]),
                Duration::from_secs(60),
            )
            .unwrap();
        assert!(
            with_audience
                .authenticate(&headers(&[("authorization", &bearer(&ours))]))
                .is_ok()
        );
    }

    #[test]
    fn services_span_tenants_and_act_for_the_one_named() {
        let token = Signer::shared(&secret())
            .unwrap()
            .mint(
                &TokenSpec::service(ServiceName::Coordinator),
                Duration::from_secs(60),
            )
            .unwrap();
        let caller = strict()
            .authenticate(&headers(&[
                ("authorization", &bearer(&token)),
                (TENANT_HEADER, "acme"),
            ]))
            .unwrap();
        assert_eq!(caller.service_name(), Some(ServiceName::Coordinator));
        assert_eq!(caller.tenant().unwrap(), "acme");
        let fake = Signer::shared(&secret())
            .unwrap()
            .mint(
                &TokenSpec {
                    subject: "service:scheduler".into(),
                    tenant: None,
                    roles: vec![Role::Service],
                },
                Duration::from_secs(60),
            )
            .unwrap();
        assert!(
            strict()
                .authenticate(&headers(&[("authorization", &bearer(&fake))]))
                .is_err()
        );
    }

    #[test]
    fn a_service_key_signs_only_its_own_service() {
        let dir = std::env::temp_dir().join(format!("agilepm-kid-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("jwks.json");
        // base64url of a 40-byte key.
        let k = "c2VydmljZS1rZXktb2YtZm9ydHktYnl0ZXMtZm9yLXRoZS10ZXN0IQ";
        std::fs::write(
            &path,
            format!(r#"{{"keys":[{{"kty":"oct","kid":"service.task","k":"{k}"}}]}}"#),
        )
        .unwrap();
        let auth = Authenticator::new(KeySet::load(None, Some(&path)).unwrap(), false, None, None);
        let key =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, k).unwrap();
        let sign = |sub: &str, roles: &[&str], tenant: Option<&str>| {
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
            header.kid = Some("service.task".into());
            let claims = Claims {
                sub: sub.into(),
                tenant: tenant.map(str::to_owned),
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                exp: jsonwebtoken::get_current_timestamp() + 60,
                nbf: None,
                iat: None,
                iss: None,
                aud: None,
            };
            let token = jsonwebtoken::encode(
                &header,
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(&key).unwrap(),
            )
            .unwrap();
            auth.authenticate(&headers(&[("authorization", &bearer(&token))]))
        };
        let own = sign("service:task", &["service"], None).unwrap();
        assert_eq!(own.service_name(), Some(ServiceName::Task));
        let impersonation = sign("service:coordinator", &["service"], None).unwrap_err();
        assert!(
            impersonation
                .to_string()
                .contains("must be signed by its own key"),
            "{impersonation}"
        );
        let person = sign("ann", &["product_owner"], Some("acme")).unwrap_err();
        assert!(
            person
                .to_string()
                .contains("signs only that service's identity"),
            "{person}"
        );
    }

    #[test]
    fn a_person_cannot_act_for_another_tenant() {
        let token = Signer::shared(&secret())
            .unwrap()
            .mint(
                &TokenSpec::person("ann", "acme", &[Role::Viewer]),
                Duration::from_secs(60),
            )
            .unwrap();
        let error = strict()
            .authenticate(&headers(&[
                ("authorization", &bearer(&token)),
                (TENANT_HEADER, "globex"),
            ]))
            .unwrap_err();
        assert!(matches!(error, AppError::PermissionDenied(_)));
    }
}
