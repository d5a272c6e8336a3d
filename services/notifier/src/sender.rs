//! One delivery attempt: a signed POST, with the safety an endpoint chosen by a tenant
//! needs. The target must still pass the allow-list; redirects are followed only within
//! the same origin and only when they keep the method and body (307, 308), so a
//! redirect cannot send a delivery to another host or turn it into a bodiless GET; the
//! whole attempt has a deadline; at most a few kilobytes of any answer are read.

use std::time::Duration;

use agilepm_platform::domain::time::now_micros;
use reqwest::StatusCode;
use reqwest::redirect::{Attempt, Policy};

use crate::domain::{Delivery, Subscription};
use crate::signing::signature_header;
use crate::target::{self, AllowedNetworks, PublicOnly, Targets};

/// How attempts are made.
#[derive(Debug, Clone)]
pub struct SenderOptions {
    /// Deadline of one attempt, connecting included.
    pub timeout: Duration,
    /// Deadline for connecting.
    pub connect_timeout: Duration,
    /// Hosts deliveries may go to.
    pub targets: Targets,
    /// `AGILEPM_NOTIFIER_ALLOWED_NETWORKS` as set, if it is; unset, a development system
    /// allows loopback and private networks and any other allows none
    /// ([`SenderOptions::resolve_networks`]).
    pub allowed_networks: Option<AllowedNetworks>,
}

impl SenderOptions {
    /// Settles the networks targets may reach for a system in `development` mode or
    /// not, and says so when it is the development default.
    pub fn resolve_networks(&mut self, development: bool) {
        self.targets.networks = match (&self.allowed_networks, development) {
            (Some(networks), _) => networks.clone(),
            (None, true) => {
                tracing::warn!(
                    "development mode: webhook targets may be loopback and private addresses; \
                     a keyed deployment allows public addresses only unless \
                     AGILEPM_NOTIFIER_ALLOWED_NETWORKS says otherwise"
                );
                AllowedNetworks::development()
            }
            (None, false) => AllowedNetworks::default(),
        };
    }
}

impl Default for SenderOptions {
    fn default() -> Self {
        SenderOptions {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            targets: Targets::default(),
            allowed_networks: None,
        }
    }
}

/// The most of an answer's body read (and dropped: a refusal records its status line
/// only): enough for a small answer to end so the connection is kept, too little for an
/// endpoint to make the notifier spend much on it.
pub const MAX_BODY_READ: usize = 4096;
/// The most of a redirect's location kept in `last_error`.
const LOCATION_SHOWN: usize = 256;
/// Redirects followed at most.
const MAX_REDIRECTS: usize = 3;

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint answered 2xx.
    Delivered {
        /// The status.
        status: u16,
    },
    /// It did not.
    Failed {
        /// For metrics: `status`, `timeout`, `transport` or `refused`.
        reason: &'static str,
        /// The HTTP status, 0 without one.
        status: u16,
        /// What happened, for `last_error` and logs.
        error: String,
    },
}

/// Makes attempts.
#[derive(Debug, Clone)]
pub struct Sender {
    client: reqwest::Client,
    targets: Targets,
}

impl Sender {
    /// A sender with `options`.
    pub fn new(options: &SenderOptions) -> anyhow::Result<Sender> {
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.connect_timeout)
            .redirect(Policy::custom(same_origin_redirects))
            .user_agent(concat!("agilepm-notifier/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(30))
            // Every name is resolved here and only to addresses deliveries may reach: the
            // check happens at the attempt, on the addresses connected to.
            .dns_resolver(PublicOnly {
                networks: std::sync::Arc::new(options.targets.networks.clone()),
            })
            .build()?;
        Ok(Sender {
            client,
            targets: options.targets.clone(),
        })
    }

    /// POSTs `delivery` to `subscription`'s endpoint, signed with its valid secrets.
    pub async fn attempt(&self, subscription: &Subscription, delivery: &Delivery) -> Outcome {
        let url = match target::parse("target_url", &subscription.target_url, &self.targets.hosts)
            .and_then(|url| self.literal_address_allowed(url))
        {
            Ok(url) => url,
            Err(refused) => {
                return Outcome::Failed {
                    reason: "refused",
                    status: 0,
                    error: refused.to_string(),
                };
            }
        };
        let now = now_micros();
        let timestamp = now.div_euclid(1_000_000);
        let secrets = subscription
            .secrets
            .valid_at(subscription.previous_secret_expire_us, now);
        let signature =
            signature_header(&secrets, &delivery.webhook_id, timestamp, &delivery.payload);
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &delivery.webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(delivery.payload.clone())
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(error) => return transport_failure(&error),
        };
        let status = response.status();
        let mut read = 0;
        // Read at most MAX_BODY_READ; the rest is dropped with the connection.
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if read < MAX_BODY_READ => read += chunk.len(),
                Ok(Some(_)) | Ok(None) => break,
                // A 2xx whose body breaks off was still accepted.
                Err(error) if !status.is_success() => return transport_failure(&error),
                Err(_) => break,
            }
        }
        if status.is_success() {
            return Outcome::Delivered {
                status: status.as_u16(),
            };
        }
        Outcome::Failed {
            reason: "status",
            status: status.as_u16(),
            error: refusal(status, response.headers()),
        }
    }
}

/// Follows a redirect only to the same scheme, host and port, and only one that keeps the
/// method and body.
impl Sender {
    /// `url` unless it names, literally, an address deliveries may not reach (names are
    /// checked by the resolver, which a literal address never reaches).
    fn literal_address_allowed(
        &self,
        url: reqwest::Url,
    ) -> agilepm_platform::domain::error::AppResult<reqwest::Url> {
        match target::literal_address(&url) {
            Some(ip) if !self.targets.networks.allows(ip) => Err(
                agilepm_platform::domain::error::AppError::precondition(format!(
                    "target_url: {ip} is not a public address; deliveries go to public \
                     addresses only unless the operator allows that network \
                     (AGILEPM_NOTIFIER_ALLOWED_NETWORKS)"
                )),
            ),
            _ => Ok(url),
        }
    }
}

fn same_origin_redirects(attempt: Attempt<'_>) -> reqwest::redirect::Action {
    let keeps_body = matches!(
        attempt.status(),
        StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT
    );
    let same_origin = attempt.previous().first().is_some_and(|first| {
        first.scheme() == attempt.url().scheme()
            && first.host_str() == attempt.url().host_str()
            && first.port_or_known_default() == attempt.url().port_or_known_default()
    });
    if keeps_body && same_origin && attempt.previous().len() <= MAX_REDIRECTS {
        attempt.follow()
    } else {
        attempt.stop()
    }
}

/// What a non-2xx answer says: its status, where a redirect not followed pointed, and the
/// start of its body.
/// What a refusal records: the status line, and for a redirect where it pointed. No
/// byte of the body: it is the receiver's, and it is shown to the tenant.
fn refusal(status: StatusCode, headers: &reqwest::header::HeaderMap) -> String {
    let mut error = format!("HTTP {status}");
    if status.is_redirection()
        && let Some(location) = headers.get("location").and_then(|l| l.to_str().ok())
    {
        let location: String = location.chars().take(LOCATION_SHOWN).collect();
        error.push_str(&format!(
            " (redirect to {location:?} not followed: only 307/308 to the same origin are)"
        ));
    }
    error
}

fn transport_failure(error: &reqwest::Error) -> Outcome {
    let reason = if error.is_timeout() {
        "timeout"
    } else {
        "transport"
    };
    // The error's chain says what failed (connection refused, DNS, TLS) without the URL's
    // query string, which reqwest would otherwise print.
    let mut text = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "could not connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    Outcome::Failed {
        reason,
        status: 0,
        error: text,
    }
}
