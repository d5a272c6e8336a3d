//! Which endpoints deliveries may go to: absolute http(s) URLs without credentials, on
//! an operator's allow-list of hosts when one is configured
//! (`AGILEPM_NOTIFIER_ALLOWED_HOSTS`), whose addresses are public: a tenant must not make
//! the notifier POST into the cluster (loopback, private, link-local and metadata
//! addresses) unless the operator allows those networks (`AGILEPM_NOTIFIER_ALLOWED_NETWORKS`).
//! Checked when a subscription is written and again at each attempt: the sender resolves
//! names through [`PublicOnly`], so the address it connects to is the one it checked and a
//! name that later resolves elsewhere (DNS rebinding) gets no request.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use agilepm_platform::domain::error::{AppError, AppResult, shown};
use ipnet::IpNet;
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

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

/// Whether `ip` is an address on the public internet: not loopback, unspecified, private
/// (RFC 1918), carrier-grade NAT (100.64/10), link-local (so not the cloud metadata
/// address 169.254.169.254), unique-local IPv6 (fc00::/7, where AWS's IPv6 metadata
/// fd00:ec2::254 lives), multicast, broadcast, documentation or benchmarking ranges. An
/// IPv4-mapped IPv6 address is judged as the IPv4 address it maps.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first == 0x2001 && v6.segments()[1] == 0x0db8))
        }
    }
}

/// Networks deliveries may reach besides public addresses: the operator's explicit
/// choice (`AGILEPM_NOTIFIER_ALLOWED_NETWORKS`, comma-separated CIDRs such as
/// `10.20.0.0/16`). Empty by default: public addresses only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedNetworks {
    networks: Vec<IpNet>,
}

impl AllowedNetworks {
    /// The networks of a comma-separated setting of CIDRs (a bare address is a /32 or
    /// /128).
    pub fn parse(setting: &str) -> anyhow::Result<AllowedNetworks> {
        let mut networks = Vec::new();
        for part in setting.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let network = match part.parse::<IpNet>() {
                Ok(network) => network,
                Err(_) => IpNet::from(part.parse::<IpAddr>().map_err(|_| {
                    anyhow::anyhow!("{part:?} is neither a CIDR network nor an address")
                })?),
            };
            networks.push(network);
        }
        Ok(AllowedNetworks { networks })
    }

    /// Loopback and private networks: a development system's default, where the
    /// receivers run beside it.
    pub fn development() -> AllowedNetworks {
        AllowedNetworks::parse(
            "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7",
        )
        .unwrap_or_default()
    }

    /// Whether a delivery may go to `ip`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.networks.iter().any(|network| network.contains(&ip))
    }

    /// Why `ip` is refused, for an error naming the host `host`.
    fn refusal(host: &str, ip: IpAddr) -> String {
        format!(
            "host {} resolves to {ip}, which is not a public address; deliveries go to public \
             addresses only unless the operator allows that network \
             (AGILEPM_NOTIFIER_ALLOWED_NETWORKS)",
            shown(host)
        )
    }
}

/// How long resolving a target's host may take when a subscription is written.
const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What a subscription's target must satisfy, checked when it is written.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// The host allow-list.
    pub hosts: AllowedHosts,
    /// The networks allowed besides public addresses.
    pub networks: AllowedNetworks,
}

impl Targets {
    /// Resolves the host of `url` (already parsed from `field`): FAILED_PRECONDITION if it
    /// does not resolve or resolves to an address deliveries may not reach.
    pub async fn vet(&self, field: &str, url: &Url) -> AppResult<()> {
        let host = url.host_str().unwrap_or_default().to_owned();
        let port = url.port_or_known_default().unwrap_or(443);
        let addresses: Vec<IpAddr> = match literal_address(url) {
            Some(ip) => vec![ip],
            None => {
                let lookup = tokio::net::lookup_host((host.as_str(), port));
                let resolved = tokio::time::timeout(RESOLVE_TIMEOUT, lookup)
                    .await
                    .map_err(|_| {
                        AppError::Unavailable(format!(
                            "{field}: resolving host {} took over {RESOLVE_TIMEOUT:?}; retry",
                            shown(&host)
                        ))
                    })?;
                resolved
                    .map_err(|e| {
                        AppError::precondition(format!(
                            "{field}: host {} does not resolve ({e})",
                            shown(&host)
                        ))
                    })?
                    .map(|a| a.ip())
                    .collect()
            }
        };
        if let Some(ip) = addresses.iter().find(|ip| !self.networks.allows(**ip)) {
            return Err(AppError::precondition(format!(
                "{field}: {}",
                AllowedNetworks::refusal(&host, *ip)
            )));
        }
        Ok(())
    }
}

/// The address a URL names literally (`http://10.0.0.1/`, `http://[::1]/`), if it does.
pub fn literal_address(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    }
}

/// The sender's resolver: the system's, keeping only the addresses deliveries may reach,
/// so the connection goes to an address checked at the moment of the attempt.
#[derive(Debug, Clone)]
pub struct PublicOnly {
    /// The networks allowed besides public addresses.
    pub networks: Arc<AllowedNetworks>,
}

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let networks = self.networks.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (allowed, refused): (Vec<SocketAddr>, Vec<SocketAddr>) =
                resolved.into_iter().partition(|a| networks.allows(a.ip()));
            if allowed.is_empty() {
                let refusal = match refused.first() {
                    Some(address) => AllowedNetworks::refusal(&host, address.ip()),
                    None => format!("host {} resolves to no address", shown(&host)),
                };
                return Err(refusal.into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
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
    fn only_public_addresses_unless_a_network_is_allowed() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            let ip: IpAddr = private.parse().unwrap();
            assert!(!is_public(ip), "{private}");
            assert!(!AllowedNetworks::default().allows(ip), "{private}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
        let allowed = AllowedNetworks::parse(" 10.20.0.0/16, 127.0.0.1 ").unwrap();
        assert!(allowed.allows("10.20.3.4".parse().unwrap()));
        assert!(allowed.allows("127.0.0.1".parse().unwrap()));
        assert!(!allowed.allows("127.0.0.2".parse().unwrap()));
        assert!(!allowed.allows("10.21.0.1".parse().unwrap()));
        assert!(AllowedNetworks::parse("10.0.0.0/33").is_err());
        assert!(AllowedNetworks::parse("not-a-network").is_err());
        assert!(AllowedNetworks::development().allows("127.0.0.1".parse().unwrap()));
    }

    #[tokio::test]
    async fn a_name_is_checked_by_what_it_resolves_to() {
        let targets = Targets::default();
        let check = |value: &'static str| {
            let targets = targets.clone();
            async move {
                let url = parse("target_url", value, &targets.hosts)?;
                targets.vet("target_url", &url).await
            }
        };
        let refused = check("http://localhost:9/hook").await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        assert!(
            refused.to_string().contains("target_url")
                && refused.to_string().contains("not a public address"),
            "{refused}"
        );
        let literal = check("http://[::1]:9/").await.unwrap_err();
        assert_eq!(literal.code(), tonic::Code::FailedPrecondition);
        let resolver = PublicOnly {
            networks: Arc::new(AllowedNetworks::default()),
        };
        let error = resolver
            .resolve("localhost".parse().unwrap())
            .await
            .err()
            .expect("localhost is refused at resolution");
        assert!(
            error.to_string().contains("not a public address"),
            "{error}"
        );
        let allowed = PublicOnly {
            networks: Arc::new(AllowedNetworks::development()),
        };
        assert!(allowed.resolve("localhost".parse().unwrap()).await.is_ok());
    }

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
