//! The notifier's own settings, from the environment (the settings every service shares
//! are the platform's `CommonConfig`). Each is bounded: a setting out of range stops the
//! service at start with a message naming it.

use std::time::Duration;

use anyhow::Context as _;

use crate::domain::RetryPolicy;
use crate::sender::SenderOptions;
use crate::sprint_health::HealthOptions;
use crate::target::{AllowedHosts, AllowedNetworks, Targets};

/// Everything the notifier can be told.
#[derive(Debug, Clone)]
pub struct NotifierOptions {
    /// How attempts are made.
    pub sender: SenderOptions,
    /// How failed deliveries are retried.
    pub retry: RetryPolicy,
    /// How sprint health is judged.
    pub health: HealthOptions,
    /// How long delivered deliveries are kept (dead letters stay until redelivered).
    pub keep_delivered: Duration,
}

impl Default for NotifierOptions {
    fn default() -> Self {
        NotifierOptions {
            sender: SenderOptions::default(),
            retry: RetryPolicy::default(),
            health: HealthOptions::default(),
            keep_delivered: Duration::from_secs(7 * 86_400),
        }
    }
}

impl NotifierOptions {
    /// The options `lookup` (an environment) gives, with defaults for the rest.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<NotifierOptions> {
        let number = |name: &str, default: u64, min: u64, max: u64| -> anyhow::Result<u64> {
            let Some(text) = lookup(name) else {
                return Ok(default);
            };
            let value: u64 = text
                .trim()
                .parse()
                .with_context(|| format!("{name}: {text:?} is not a whole number"))?;
            anyhow::ensure!(
                (min..=max).contains(&value),
                "{name}: {value} is outside {min} to {max}"
            );
            Ok(value)
        };
        let defaults = NotifierOptions::default();
        let millis = |name: &str, default: Duration, min: u64, max: u64| {
            number(name, default.as_millis() as u64, min, max).map(Duration::from_millis)
        };
        Ok(NotifierOptions {
            sender: SenderOptions {
                timeout: millis(
                    "AGILEPM_NOTIFIER_TIMEOUT_MS",
                    defaults.sender.timeout,
                    100,
                    60_000,
                )?,
                connect_timeout: millis(
                    "AGILEPM_NOTIFIER_CONNECT_TIMEOUT_MS",
                    defaults.sender.connect_timeout,
                    100,
                    60_000,
                )?,
                targets: Targets {
                    hosts: AllowedHosts::parse(
                        &lookup("AGILEPM_NOTIFIER_ALLOWED_HOSTS").unwrap_or_default(),
                    ),
                    networks: AllowedNetworks::default(),
                },
                allowed_networks: lookup("AGILEPM_NOTIFIER_ALLOWED_NETWORKS")
                    .map(|setting| {
                        AllowedNetworks::parse(&setting)
                            .context("AGILEPM_NOTIFIER_ALLOWED_NETWORKS")
                    })
                    .transpose()?,
            },
            retry: RetryPolicy {
                max_attempts: number(
                    "AGILEPM_NOTIFIER_MAX_ATTEMPTS",
                    defaults.retry.max_attempts as u64,
                    1,
                    100,
                )? as i64,
                first_delay: millis(
                    "AGILEPM_NOTIFIER_RETRY_FIRST_DELAY_MS",
                    defaults.retry.first_delay,
                    10,
                    3_600_000,
                )?,
                max_delay: millis(
                    "AGILEPM_NOTIFIER_RETRY_MAX_DELAY_MS",
                    defaults.retry.max_delay,
                    10,
                    86_400_000,
                )?,
            },
            health: HealthOptions {
                margin: number(
                    "AGILEPM_NOTIFIER_AT_RISK_MARGIN_PERCENT",
                    (defaults.health.margin * 100.0).round() as u64,
                    0,
                    100,
                )? as f64
                    / 100.0,
                recheck_every: millis(
                    "AGILEPM_NOTIFIER_HEALTH_RECHECK_MS",
                    defaults.health.recheck_every,
                    1_000,
                    86_400_000,
                )?,
                settle: millis(
                    "AGILEPM_NOTIFIER_HEALTH_SETTLE_MS",
                    defaults.health.settle,
                    10,
                    60_000,
                )?,
            },
            keep_delivered: Duration::from_secs(number(
                "AGILEPM_NOTIFIER_KEEP_DELIVERED_SECS",
                defaults.keep_delivered.as_secs(),
                1,
                366 * 86_400,
            )?),
        })
    }

    /// The options of this process's environment.
    pub fn from_env() -> anyhow::Result<NotifierOptions> {
        NotifierOptions::from_lookup(|name| std::env::var(name).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_read_and_bounded() {
        let options = NotifierOptions::from_lookup(|name| match name {
            "AGILEPM_NOTIFIER_MAX_ATTEMPTS" => Some("3".into()),
            "AGILEPM_NOTIFIER_AT_RISK_MARGIN_PERCENT" => Some("25".into()),
            "AGILEPM_NOTIFIER_ALLOWED_HOSTS" => Some("hooks.acme.com".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(options.retry.max_attempts, 3);
        assert_eq!(options.health.margin, 0.25);
        assert!(options.sender.targets.hosts.allows("hooks.acme.com"));
        assert!(!options.sender.targets.hosts.allows("evil.test"));
        let refused = NotifierOptions::from_lookup(|name| {
            (name == "AGILEPM_NOTIFIER_MAX_ATTEMPTS").then(|| "0".into())
        })
        .unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("AGILEPM_NOTIFIER_MAX_ATTEMPTS"),
            "{refused}"
        );
    }
}
