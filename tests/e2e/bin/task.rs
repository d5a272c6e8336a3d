//! The task service as its own process, for the load-and-abuse suite (which measures its
//! CPU and memory, starves it of file descriptors and freezes its database). Same code
//! path as the `agilepm-task` binary; built here because cargo hands integration tests the
//! paths of their own package's binaries only.

use agilepm_platform::wire::config::ServiceName;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    agilepm_platform::runtime::service::main(ServiceName::Task, agilepm_task::run).await
}
