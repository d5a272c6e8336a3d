//! `agilepm-coordinator`: the coordinator as its own process.

use agilepm_platform::wire::config::ServiceName;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    agilepm_platform::runtime::service::main(ServiceName::Coordinator, agilepm_coordinator::run)
        .await
}
