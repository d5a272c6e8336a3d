//! Where a peer service is, and how calls spread over its replicas.
//!
//! One HTTP/2 connection carries every call a client makes, so a client that connects to
//! a Kubernetes Service (one virtual IP) sends everything to whichever pod answered first.
//! A peer endpoint may therefore name several replicas:
//!
//! | endpoint | calls go to |
//! |---|---|
//! | `http://task:50052` | that address (one connection) |
//! | `http://10.0.0.5:50052,http://10.0.0.6:50052` | each address, balanced |
//! | `dns:///agilepm-task-headless:50052` | every address the name resolves to, re-resolved every [`RESOLVE_EVERY`], balanced (TLS when the service has a client TLS configuration) |
//!
//! Balancing is tower's power-of-two-choices over the replicas' pending calls (tonic's
//! balanced channel): a slow replica gets fewer calls. The `dns:///` form is gRPC's own
//! target syntax, and with a headless Service it follows pods as they come and go.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::mpsc::Sender;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// How often a `dns:///` target is resolved again.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(5);

/// How often it is resolved while it resolves to nothing (at start, or all pods gone).
const RESOLVE_EMPTY_EVERY: Duration = Duration::from_millis(500);

/// A parsed peer endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerTarget {
    /// One endpoint (`http://host:port` or `https://`).
    One(String),
    /// Several endpoints, balanced.
    List(Vec<String>),
    /// A name resolved again and again, every address balanced.
    Dns {
        /// The name (also the TLS server name).
        host: String,
        /// The port on every address.
        port: u16,
    },
}

impl PeerTarget {
    /// Parses an endpoint as configured (`AGILEPM_TASK_ENDPOINT` and the like).
    pub fn parse(endpoint: &str) -> anyhow::Result<PeerTarget> {
        let endpoint = endpoint.trim();
        if let Some(rest) = endpoint.strip_prefix("dns:///") {
            let (host, port) = rest
                .rsplit_once(':')
                .with_context(|| format!("{endpoint:?}: dns:///HOST:PORT needs a port"))?;
            let port: u16 = port
                .parse()
                .with_context(|| format!("{endpoint:?}: {port:?} is not a port"))?;
            anyhow::ensure!(
                !host.is_empty(),
                "{endpoint:?}: dns:///HOST:PORT needs a host"
            );
            return Ok(PeerTarget::Dns {
                host: host.to_owned(),
                port,
            });
        }
        let list: Vec<String> = endpoint
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(str::to_owned)
            .collect();
        match list.len() {
            0 => anyhow::bail!("an empty peer endpoint"),
            1 => Ok(PeerTarget::One(list.into_iter().next().unwrap_or_default())),
            _ => Ok(PeerTarget::List(list)),
        }
    }
}

/// A lazily connecting channel to `target`, each endpoint built by `endpoint` (from its
/// URL, and for a resolved address the name it was resolved from). A `dns:///` target's
/// resolver runs until the channel (every clone of it) is dropped.
pub fn channel(
    target: &PeerTarget,
    tls: Option<&ClientTlsConfig>,
    endpoint: impl Fn(Endpoint) -> Endpoint + Send + 'static,
) -> anyhow::Result<Channel> {
    let tls = tls.cloned();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let build = move |url: &str, server_name: Option<&str>| -> anyhow::Result<Endpoint> {
        let mut builder = Endpoint::from_shared(url.to_owned())
            .with_context(|| format!("peer endpoint {url:?}"))?;
        if url.starts_with("https://") {
            let mut config = tls.clone().unwrap_or_default();
            if let Some(name) = server_name {
                config = config.domain_name(name);
            }
            builder = builder.tls_config(config)?;
        }
        Ok(builder)
    };
    Ok(match target {
        PeerTarget::One(url) => endpoint(build(url, None)?).connect_lazy(),
        PeerTarget::List(urls) => {
            let endpoints = urls
                .iter()
                .map(|url| build(url, None).map(&endpoint))
                .collect::<anyhow::Result<Vec<_>>>()?;
            Channel::balance_list(endpoints.into_iter())
        }
        PeerTarget::Dns { host, port } => {
            let (channel, changes) = Channel::balance_channel(64);
            // While the name resolves to nothing, the channel holds one endpoint by the
            // name itself: connecting to it fails, so calls fail at once with UNAVAILABLE,
            // as to any unreachable peer, instead of waiting for an address that may
            // never come.
            let by_name = endpoint(build(&format!("{scheme}://{host}:{port}"), None)?);
            let server_name = host.clone();
            let by_address = move |address: SocketAddr| {
                build(&format!("{scheme}://{address}"), Some(&server_name)).map(&endpoint)
            };
            tokio::spawn(resolve(host.clone(), *port, by_address, by_name, changes));
            channel
        }
    })
}

/// The balanced channel's key of the endpoint by name (addresses are keyed by themselves).
const BY_NAME: &str = "by-name";

/// Resolves `host` again and again, telling the balanced channel which addresses came and
/// went, until the channel is dropped.
async fn resolve(
    host: String,
    port: u16,
    by_address: impl Fn(SocketAddr) -> anyhow::Result<Endpoint>,
    by_name: Endpoint,
    changes: Sender<Change<String, Endpoint>>,
) {
    let mut current: BTreeSet<SocketAddr> = BTreeSet::new();
    let mut named = false;
    loop {
        let resolved = match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(addresses) => addresses.collect(),
            // Kept: the addresses known still serve until the name resolves again.
            Err(error) => {
                tracing::warn!(%host, %error, "cannot resolve a peer's name; keeping its last addresses");
                current.clone()
            }
        };
        let mut sent = Vec::new();
        for change in diff(&current, &resolved) {
            sent.push(match change {
                Change::Insert(address, ()) => match by_address(address) {
                    Ok(endpoint) => Change::Insert(address.to_string(), endpoint),
                    Err(error) => {
                        tracing::error!(%address, error = %format!("{error:#}"), "cannot build a peer endpoint");
                        continue;
                    }
                },
                Change::Remove(address) => Change::Remove(address.to_string()),
            });
        }
        if resolved.is_empty() != named {
            named = resolved.is_empty();
            sent.push(if named {
                Change::Insert(BY_NAME.to_owned(), by_name.clone())
            } else {
                Change::Remove(BY_NAME.to_owned())
            });
        }
        for change in sent {
            if changes.send(change).await.is_err() {
                return;
            }
        }
        current = resolved;
        let pause = if current.is_empty() {
            RESOLVE_EMPTY_EVERY
        } else {
            RESOLVE_EVERY
        };
        tokio::select! {
            () = changes.closed() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// What changed from `before` to `after`: insertions, then removals.
fn diff(
    before: &BTreeSet<SocketAddr>,
    after: &BTreeSet<SocketAddr>,
) -> Vec<Change<SocketAddr, ()>> {
    after
        .difference(before)
        .map(|address| Change::Insert(*address, ()))
        .chain(
            before
                .difference(after)
                .map(|address| Change::Remove(*address)),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_as_one_a_list_or_a_name() {
        assert_eq!(
            PeerTarget::parse("http://task:50052").unwrap(),
            PeerTarget::One("http://task:50052".into())
        );
        assert_eq!(
            PeerTarget::parse("http://a:1, http://b:2").unwrap(),
            PeerTarget::List(vec!["http://a:1".into(), "http://b:2".into()])
        );
        assert_eq!(
            PeerTarget::parse("dns:///agilepm-task-headless:50052").unwrap(),
            PeerTarget::Dns {
                host: "agilepm-task-headless".into(),
                port: 50052
            }
        );
        for bad in ["", "dns:///task", "dns:///task:http", "dns:///:1"] {
            assert!(PeerTarget::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_nothing_fails_calls_at_once() {
        let channel =
            crate::wire::client::connect_lazy("dns:///nothing.invalid:50051", None).unwrap();
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        let call = client.check(tonic_health::pb::HealthCheckRequest::default());
        let status = tokio::time::timeout(Duration::from_secs(4), call)
            .await
            .expect("answered within 4 s, not left waiting")
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    }

    #[test]
    fn a_resolution_adds_new_addresses_and_drops_gone_ones() {
        let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:1".parse().unwrap();
        let c: SocketAddr = "10.0.0.3:1".parse().unwrap();
        let changes = diff(&[a, b].into(), &[b, c].into());
        let inserted: Vec<_> = changes
            .iter()
            .filter_map(|change| match change {
                Change::Insert(address, ()) => Some(*address),
                Change::Remove(_) => None,
            })
            .collect();
        let removed: Vec<_> = changes
            .iter()
            .filter_map(|change| match change {
                Change::Remove(address) => Some(*address),
                Change::Insert(..) => None,
            })
            .collect();
        assert_eq!((inserted, removed), (vec![c], vec![a]));
        assert!(diff(&[a].into(), &[a].into()).is_empty());
    }
}
