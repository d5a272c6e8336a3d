//! The task service as its own process, for the load-and-abuse suite (which measures its
//! CPU and memory, starves it of file descriptors and freezes its database). Same code
//! path as the `agilepm-task` binary; built here because cargo hands integration tests the
//! paths of their own package's binaries only.

use agilepm_platform::wire::config::ServiceName;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // For the error-reporting test only: no request can make the service panic, so the
    // test plants a panic in a task of a process set up as the service sets itself up.
    if let Ok(message) = std::env::var("AGILEPM_TEST_PANIC") {
        let _telemetry = agilepm_platform::wire::telemetry::init("agilepm-task", None)?;
        let _ = tokio::spawn(async move { panic!("{message}") }).await;
        return Ok(());
    }
    agilepm_platform::runtime::service::main(ServiceName::Task, agilepm_task::run).await
}
