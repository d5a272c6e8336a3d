//! `agilepm-notifier`: the notifier as its own process.

use agilepm_platform::wire::config::ServiceName;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    agilepm_platform::runtime::service::main(ServiceName::Notifier, agilepm_notifier::run).await
}
