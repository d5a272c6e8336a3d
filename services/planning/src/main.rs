//! `agilepm-planning`: the planning service as its own process.

use agilepm_platform::wire::config::ServiceName;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    agilepm_platform::runtime::service::main(ServiceName::Planning, agilepm_planning::run).await
}
