//! What planning's peers keep of its state, re-recorded when planning starts: every
//! product and use case in the backlog-item service, every team member and every team's
//! settings in the task service.
//!
//! Changes record themselves there before they commit (`product::commands`,
//! `team::commands`), so this only repairs what that cannot: rows written before the peer
//! kept a record, and a change recorded there whose commit here then failed (the newer
//! record of the same version, written here, replaces it). It is idempotent: a record is
//! applied only if it is not older than the one kept.

use std::future::Future;
use std::time::Duration;

use agilepm_platform::domain::error::AppResult;
use agilepm_platform::storage::db::Db;
use tokio_util::sync::CancellationToken;

use crate::peers::Peers;
use crate::{product, team, use_case};

/// Rows per call: well under the peers' limit of 1000 facts.
const PAGE: i64 = 500;

/// A resume key: the (tenant, id) of the last row recorded.
type After = (String, String);

/// Facts to record, one batch per tenant.
type Batches<F> = Vec<(String, Vec<F>)>;

/// Records every product and every member, page by page, until all are recorded or
/// `shutdown`; a failed page is retried with a growing pause (a peer may start after
/// planning).
pub async fn record_all(db: Db, peers: Peers, shutdown: CancellationToken) {
    let products = record_every("products in backlog-item", &shutdown, |after| {
        product_page(&db, &peers, after)
    });
    let use_cases = record_every("use cases in backlog-item", &shutdown, |after| {
        use_case_page(&db, &peers, after)
    });
    let members = record_every("team members in task", &shutdown, |after| {
        member_page(&db, &peers, after)
    });
    let settings = record_every("team settings in task", &shutdown, |after| {
        settings_page(&db, &peers, after)
    });
    tokio::join!(products, use_cases, members, settings);
}

/// Runs `page` from the start until it reports nothing left; `what` names the records in
/// logs.
async fn record_every<F, Fut>(what: &str, shutdown: &CancellationToken, page: F)
where
    F: Fn(After) -> Fut,
    Fut: Future<Output = AppResult<Option<(After, usize)>>>,
{
    let mut after = After::default();
    let mut pause = Duration::from_millis(100);
    let mut recorded = 0usize;
    loop {
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = page(after.clone()) => outcome,
        };
        match outcome {
            Ok(None) => {
                tracing::info!(records = recorded, "every one of the {what} is recorded");
                return;
            }
            Ok(Some((last, count))) => {
                after = last;
                recorded += count;
                pause = Duration::from_millis(100);
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?pause, "cannot record {what} yet");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// `rows` (ordered by tenant) split into one batch of facts per tenant, and the resume
/// key of the last row; none when there are no rows.
fn by_tenant<R, F>(
    rows: &[R],
    key: impl Fn(&R) -> (&str, &str),
    facts: impl Fn(&R) -> F,
) -> Option<(Batches<F>, After)> {
    let mut batches: Batches<F> = Vec::new();
    for row in rows {
        let (tenant, _) = key(row);
        match batches.last_mut() {
            Some((last, all)) if last == tenant => all.push(facts(row)),
            _ => batches.push((tenant.to_owned(), vec![facts(row)])),
        }
    }
    let (tenant, id) = key(rows.last()?);
    Some((batches, (tenant.to_owned(), id.to_owned())))
}

/// Records the products after `after`; the last key and count, or `None` when there was
/// nothing left.
async fn product_page(db: &Db, peers: &Peers, after: After) -> AppResult<Option<(After, usize)>> {
    let rows = product::store::all_after(db, &after, PAGE).await?;
    let Some((batches, last)) = by_tenant(
        &rows,
        |p| (p.tenant_id.as_str(), p.id.as_str()),
        product::mapping::facts,
    ) else {
        return Ok(None);
    };
    for (tenant, facts) in &batches {
        peers.record_products(tenant, facts).await?;
    }
    Ok(Some((last, rows.len())))
}

/// Records the use cases after `after`, as [`product_page`] does products.
async fn use_case_page(db: &Db, peers: &Peers, after: After) -> AppResult<Option<(After, usize)>> {
    let rows = use_case::store::all_after(db, &after, PAGE).await?;
    let Some((batches, last)) = by_tenant(
        &rows,
        |u| (u.tenant_id.as_str(), u.id.as_str()),
        use_case::mapping::facts,
    ) else {
        return Ok(None);
    };
    for (tenant, facts) in &batches {
        peers.record_use_cases(tenant, facts).await?;
    }
    Ok(Some((last, rows.len())))
}

/// Records the team members after `after`, as [`product_page`] does products.
async fn member_page(db: &Db, peers: &Peers, after: After) -> AppResult<Option<(After, usize)>> {
    let rows = team::store::all_after(db, &after, PAGE).await?;
    let Some((batches, last)) = by_tenant(
        &rows,
        |m| (m.tenant_id.as_str(), m.id.as_str()),
        team::mapping::facts,
    ) else {
        return Ok(None);
    };
    for (tenant, facts) in &batches {
        peers.record_members(tenant, facts).await?;
    }
    Ok(Some((last, rows.len())))
}

/// Records the team settings of the tenants after `after`'s tenant, one call per tenant.
async fn settings_page(db: &Db, peers: &Peers, after: After) -> AppResult<Option<(After, usize)>> {
    let rows = team::store::all_settings_after(db, &after.0, PAGE).await?;
    let Some(last) = rows.last() else {
        return Ok(None);
    };
    for settings in &rows {
        peers
            .record_team_settings(&settings.tenant_id, team::mapping::settings_facts(settings))
            .await?;
    }
    Ok(Some(((last.tenant_id.clone(), String::new()), rows.len())))
}
