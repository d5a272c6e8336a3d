//! Which endpoints deliveries may go to: absolute http(s) URLs without credentials, on
//! an operator's allow-list of hosts when one is configured
//! (`AGILEPM_NOTIFIER_ALLOWED_HOSTS`). Checked when a subscription is written and again
//! before each attempt, so a narrowed allow-list takes effect at once.

use agilepm_platform::domain::error::{AppError, AppResult, shown};
use reqwest::Url;

/// The longest target URL accepted, in bytes.
pub const MAX_URL_BYTES: usize = 2048;

/// Hosts deliveries may go to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    /// Exact host names or addresses, lower case; `*.example.com` allows every name
    /// under `example.com` (not `example.com` itself). Empty: every host.
    patterns: Vec<String>,
}

impl AllowedHosts {
    /// The allow-list of a comma-separated setting (empty: every host).
    pub fn parse(setting: &str) -> AllowedHosts {
        AllowedHosts {
            patterns: setting
                .split(',')
                .map(|p| p.trim().to_ascii_lowercase())
                .filter(|p| !p.is_empty())
                .collect(),
        }
    }

    /// Whether `host` (as a URL names it) may be delivered to.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.patterns.is_empty()
            || self
                .patterns
                .iter()
                .any(|pattern| match pattern.strip_prefix("*.") {
                    Some(domain) => host
                        .strip_suffix(domain)
                        .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
                    None => *pattern == host,
                })
    }
}

/// Parses a target URL from field `field`, refusing what may not be delivered to.
pub fn parse(field: &str, value: &str, allowed: &AllowedHosts) -> AppResult<Url> {
    if value.is_empty() {
        return Err(AppError::invalid(field, "required"));
    }
    if value.len() > MAX_URL_BYTES {
        return Err(AppError::invalid(
            field,
            format!("must be at most {MAX_URL_BYTES} bytes, got {}", value.len()),
        ));
    }
    let url = Url::parse(value).map_err(|e| {
        AppError::invalid(
            field,
            format!("not an absolute URL ({e}): {}", shown(value)),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(AppError::invalid(
            field,
            format!("must be http:// or https://, not {}://", url.scheme()),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(AppError::invalid(
            field,
            "must not carry credentials (deliveries are signed instead)",
        ));
    }
    let host = url
        .host_str()
        .ok_or_else(|| AppError::invalid(field, "must name a host"))?;
    if !allowed.allows(host) {
        return Err(AppError::invalid(
            field,
            format!("host {} is not on the notifier's allow-list", shown(host)),
        ));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_to_allowed_hosts_without_credentials() {
        let any = AllowedHosts::default();
        assert!(parse("u", "https://hooks.example.com/a?b=c", &any).is_ok());
        assert!(parse("u", "http://127.0.0.1:8080/", &any).is_ok());
        for bad in [
            "",
            "ftp://example.com/",
            "file:///etc/passwd",
            "gopher://x",
            "/relative",
            "https://user:pw@example.com/",
            "http://",
        ] {
            assert!(parse("u", bad, &any).is_err(), "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_BYTES));
        assert!(parse("u", &long, &any).is_err());
    }

    #[test]
    fn the_allow_list_matches_hosts_and_subdomains() {
        let allowed = AllowedHosts::parse(" hooks.acme.com, *.example.org ,127.0.0.1");
        assert!(allowed.allows("hooks.acme.com"));
        assert!(allowed.allows("HOOKS.ACME.COM"));
        assert!(allowed.allows("a.example.org"));
        assert!(allowed.allows("a.b.example.org"));
        assert!(allowed.allows("127.0.0.1"));
        assert!(!allowed.allows("example.org"));
        assert!(!allowed.allows("badexample.org"));
        assert!(!allowed.allows("acme.com"));
        let refused = parse("target_url", "https://evil.test/", &allowed).unwrap_err();
        assert!(refused.to_string().contains("allow-list"), "{refused}");
    }
}
