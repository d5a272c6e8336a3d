//! The coordinator as its own process, for the end-to-end crash test (which kills it with
//! SIGKILL). Same code path as the `agilepm-coordinator` binary; built here because cargo
//! hands integration tests the paths of their own package's binaries only.

use agilepm_platform::wire::config::ServiceName;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    agilepm_platform::runtime::service::main(ServiceName::Coordinator, agilepm_coordinator::run)
        .await
}
