//! `agilepm-backlog-item`: the backlog-item service as its own process.

use agilepm_platform::wire::config::ServiceName;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    agilepm_platform::runtime::service::main(ServiceName::BacklogItem, agilepm_backlog_item::run)
        .await
}
