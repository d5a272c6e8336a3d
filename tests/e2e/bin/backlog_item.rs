//! The backlog-item service as its own process, for the end-to-end trace test (each
//! service exports its spans under its own name). Same code path as the
//! `agilepm-backlog-item` binary; built here because cargo hands integration tests the
//! paths of their own package's binaries only.

use agilepm_platform::wire::config::ServiceName;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    agilepm_platform::runtime::service::main(ServiceName::BacklogItem, agilepm_backlog_item::run)
        .await
}
