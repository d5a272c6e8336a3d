//! Every product re-recorded in the backlog-item service when planning starts.
//!
//! Product changes record themselves there before they commit (`product::commands`), so this only
//! repairs what that cannot: products created before the backlog-item service kept a
//! record, and a change recorded there whose commit here then failed (the newer record of
//! the same version, written here, replaces it). It is idempotent: a record is applied only
//! if it is not older than the one kept.

use std::time::Duration;

use agilepm_platform::domain::error::AppResult;
use agilepm_platform::storage::db::Db;
use agilepm_proto::backlog::v1::ProductFacts;
use tokio_util::sync::CancellationToken;

use crate::peers::Peers;
use crate::product::{mapping, store};

/// Products per call: well under the backlog-item service's limit of 1000.
const PAGE: i64 = 500;

/// Records every product, page by page, until all are recorded or `shutdown`; a failed
/// page is retried with a growing pause (backlog-item may start after planning).
pub async fn record_all(db: Db, peers: Peers, shutdown: CancellationToken) {
    let mut after = (String::new(), String::new());
    let mut pause = Duration::from_millis(100);
    let mut recorded = 0usize;
    loop {
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = record_page(&db, &peers, &after) => outcome,
        };
        match outcome {
            Ok(None) => {
                tracing::info!(
                    products = recorded,
                    "every product is recorded in backlog-item"
                );
                return;
            }
            Ok(Some((last, count))) => {
                after = last;
                recorded += count;
                pause = Duration::from_millis(100);
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?pause, "cannot record products in backlog-item yet");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Records the page after `after` (tenant, id); the last key and count, or `None` when
/// there was nothing left.
async fn record_page(
    db: &Db,
    peers: &Peers,
    after: &(String, String),
) -> AppResult<Option<((String, String), usize)>> {
    let products = store::all_after(db, after, PAGE).await?;
    let mut by_tenant: Vec<(String, Vec<ProductFacts>)> = Vec::new();
    for product in &products {
        let facts = mapping::facts(product);
        match by_tenant.last_mut() {
            Some((last, all)) if *last == product.tenant_id => all.push(facts),
            _ => by_tenant.push((product.tenant_id.clone(), vec![facts])),
        }
    }
    let Some((tenant, products)) = by_tenant.last() else {
        return Ok(None);
    };
    let last = (
        tenant.clone(),
        products
            .last()
            .map(|p| p.product_id.clone())
            .unwrap_or_default(),
    );
    for (tenant, products) in &by_tenant {
        peers.record_products(tenant, products).await?;
    }
    Ok(Some((last, products.len())))
}
