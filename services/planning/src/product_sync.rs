//! Every product re-recorded in the backlog-item service when planning starts.
//!
//! Product changes record themselves there before they commit (`products`), so this only
//! repairs what that cannot: products created before the backlog-item service kept a
//! record, and a change recorded there whose commit here then failed (the newer record of
//! the same version, written here, replaces it). It is idempotent: a record is applied only
//! if it is not older than the one kept.

use std::time::Duration;

use agilepm_platform::db::Db;
use agilepm_platform::error::AppResult;
use agilepm_platform::stored;
use agilepm_proto::planning::v1::Product;
use sqlx::Row as _;
use tokio_util::sync::CancellationToken;

use crate::peers::Peers;

/// Products per call: well under the backlog-item service's limit of 1000.
const PAGE: i64 = 500;

const NEXT_PAGE: &str = "SELECT id, tenant_id, status_transition_mode, version FROM products \
     WHERE tenant_id > $1 OR (tenant_id = $1 AND id > $2) ORDER BY tenant_id, id LIMIT $3";

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
    let rows = sqlx::query(NEXT_PAGE)
        .bind(after.0.clone())
        .bind(after.1.clone())
        .bind(PAGE)
        .fetch_all(db.pool())
        .await?;
    let mut by_tenant: Vec<(String, Vec<Product>)> = Vec::new();
    for row in &rows {
        let tenant: String = row.try_get("tenant_id")?;
        let product = Product {
            id: row.try_get("id")?,
            status_transition_mode: stored::enum_value::<
                agilepm_proto::common::v1::StatusTransitionMode,
            >(
                row.try_get("status_transition_mode")?,
                "products.status_transition_mode",
            )? as i32,
            version: row.try_get("version")?,
            ..Default::default()
        };
        match by_tenant.last_mut() {
            Some((last, products)) if *last == tenant => products.push(product),
            _ => by_tenant.push((tenant, vec![product])),
        }
    }
    let Some((tenant, products)) = by_tenant.last() else {
        return Ok(None);
    };
    let last = (
        tenant.clone(),
        products.last().map(|p| p.id.clone()).unwrap_or_default(),
    );
    for (tenant, products) in &by_tenant {
        peers.record_products(tenant, products).await?;
    }
    Ok(Some((last, rows.len())))
}
