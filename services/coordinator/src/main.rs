//! `agilepm-coordinator`: the coordinator as its own process.

use agilepm_platform::config::ServiceName;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    agilepm_platform::service::main(ServiceName::Coordinator, agilepm_coordinator::run).await
}
