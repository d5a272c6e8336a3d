//! The notifier as its own process, for the end-to-end tests that kill it or give it
//! settings of its own. Same code path as the `agilepm-notifier` binary.

use agilepm_platform::wire::config::ServiceName;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    agilepm_platform::runtime::service::main(ServiceName::Notifier, agilepm_notifier::run).await
}
