//! The planning service as its own process, for the tests that run it under a shifted
//! wall clock (a team's days across its midnight). Same code path as the
//! `agilepm-planning` binary; built here because cargo hands integration tests the paths
//! of their own package's binaries only.

use agilepm_platform::wire::config::ServiceName;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    agilepm_platform::runtime::service::main(ServiceName::Planning, agilepm_planning::run).await
}
