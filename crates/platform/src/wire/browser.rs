//! Browsers as clients: every port answers gRPC-Web (tonic's translation layer) beside
//! native gRPC, so a page calls the same API, through the same authentication, limits,
//! deadlines and metrics, including the server-streaming event feed. A page served from
//! another origin may call only if that origin is allowed (CORS); none is by default, and
//! `agilepm dev` allows its own board.
//!
//! Nothing here carries cookies: a browser sends its token in `authorization`, which CORS
//! must allow as a request header; `grpc-status` and `grpc-message` must be readable by
//! the page, so they are exposed.

use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Which web origins may call this server from a browser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrowserAccess {
    /// Exact origins (`https://board.example.com`, `http://127.0.0.1:50050`).
    pub allowed_origins: Vec<HeaderValue>,
}

/// Browser access as flags and environment variables.
#[derive(Debug, Clone, Args)]
pub struct BrowserArgs {
    /// Web origins allowed to call from a browser over gRPC-Web (comma-separated, each
    /// `scheme://host[:port]`); none by default.
    #[arg(
        long = "cors-allowed-origins",
        env = "AGILEPM_CORS_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_allowed_origins: Vec<String>,
}

impl BrowserArgs {
    /// The access these flags describe; refuses what is not an origin.
    pub fn resolve(&self) -> anyhow::Result<BrowserAccess> {
        let allowed_origins = self
            .cors_allowed_origins
            .iter()
            .map(|origin| origin.trim())
            .filter(|origin| !origin.is_empty())
            .map(origin)
            .collect::<anyhow::Result<_>>()?;
        Ok(BrowserAccess { allowed_origins })
    }
}

/// `value` as an origin: a scheme and a host (and port), nothing else. A wildcard is
/// refused: an operator names the pages that may call.
pub fn origin(value: &str) -> anyhow::Result<HeaderValue> {
    let (scheme, rest) = value
        .split_once("://")
        .with_context(|| format!("CORS origin {value:?} is not scheme://host[:port]"))?;
    anyhow::ensure!(
        matches!(scheme, "http" | "https"),
        "CORS origin {value:?}: the scheme must be http or https"
    );
    anyhow::ensure!(
        !rest.is_empty() && !rest.contains(['/', '*', '?', '#', '@', ' ']),
        "CORS origin {value:?} must be an exact scheme://host[:port], without a path or wildcard"
    );
    HeaderValue::from_str(value).with_context(|| format!("CORS origin {value:?}"))
}

impl BrowserAccess {
    /// The CORS layer for these origins: with none, no response allows another origin,
    /// so browsers refuse pages from elsewhere while native clients are unaffected.
    pub fn cors(&self) -> CorsLayer {
        let headers = [
            "authorization",
            "content-type",
            "grpc-timeout",
            "x-grpc-web",
            "x-user-agent",
            "traceparent",
            "tracestate",
        ];
        let exposed = ["grpc-status", "grpc-message", "grpc-status-details-bin"];
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(self.allowed_origins.clone()))
            .allow_methods([Method::POST])
            .allow_headers(headers.map(HeaderName::from_static))
            .expose_headers(exposed.map(HeaderName::from_static))
            .max_age(Duration::from_secs(600))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_origins_are_allowed() {
        for good in ["http://127.0.0.1:50050", "https://board.example.com"] {
            assert_eq!(origin(good).unwrap(), good);
        }
        for bad in [
            "*",
            "https://*.example.com",
            "board.example.com",
            "ftp://example.com",
            "https://example.com/board",
            "https://",
            "https://user@example.com",
        ] {
            assert!(origin(bad).is_err(), "{bad:?} accepted");
        }
        let args = BrowserArgs {
            cors_allowed_origins: vec!["https://a.example".into(), " ".into()],
        };
        assert_eq!(args.resolve().unwrap().allowed_origins.len(), 1);
    }
}
