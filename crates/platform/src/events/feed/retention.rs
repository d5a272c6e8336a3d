//! Outbox retention: the outbox does not grow forever.
//!
//! In the background, events are deleted oldest first once they are older than
//! [`RetentionOptions::keep_for`] **and** every registered consumer has acknowledged
//! them (`AcknowledgeFeedPosition`, which agilepm's followers call as they save their
//! checkpoints). Past [`RetentionOptions::max_events`] the oldest are deleted whatever
//! the consumers, and each consumer that had not handled them is reported at error level:
//! a hard cap on disk beats a full disk, and it is the one case that loses an event for
//! someone, so it is loud.
//!
//! Deletion only ever reaches the settled head (every event at or below it committed, and
//! none can appear there later), and each chunk records the position it deleted through
//! (`feed_retention`) in the same transaction. A subscription from before that position
//! is refused with OUT_OF_RANGE, and a subscriber catching up checks it after every read
//! ([`Hub::read_gap`](super::hub::Hub::read_gap)'s caller), so nobody is silently handed
//! a feed with a hole in it.

use sqlx::Row as _;
use tokio_util::sync::CancellationToken;

use crate::domain::error::{AppError, AppResult};
use crate::domain::time::now_micros;
use crate::events::feed::Position;
use crate::storage::db::{Db, Engine};
pub use crate::wire::config::RetentionOptions;

/// Consumers one feed registers at most.
pub const MAX_CONSUMERS: i64 = 32;

/// Events examined (and at most deleted) per transaction.
const CHUNK: i64 = 1000;

/// Chunks per run: a run deletes at most this many times [`CHUNK`] events, and the next
/// run goes on.
const CHUNKS_PER_RUN: usize = 100;

/// The position every event through which has been deleted ([`Position::START`] when
/// none has).
pub async fn deleted_through(pool: &sqlx::AnyPool) -> Result<Position, sqlx::Error> {
    let row = sqlx::query("SELECT txid, seq FROM feed_retention WHERE singleton = 1")
        .fetch_optional(pool)
        .await?;
    Ok(match row {
        Some(row) => Position {
            txid: row.try_get("txid")?,
            seq: row.try_get("seq")?,
        },
        None => Position::START,
    })
}

/// Records that `consumer` has handled every event through `position`.
pub async fn acknowledge(db: &Db, consumer: &str, position: Position) -> AppResult<()> {
    let mut uow = db.begin().await?;
    let known: i64 = sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM feed_consumers WHERE consumer <> $1",
    )
    .bind(consumer)
    .fetch_one(uow.conn())
    .await?;
    if known >= MAX_CONSUMERS {
        return Err(AppError::ResourceExhausted(format!(
            "this feed registers {MAX_CONSUMERS} consumers at most"
        )));
    }
    sqlx::query(
        "INSERT INTO feed_consumers (consumer, txid, seq, update_time_us) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (consumer) DO UPDATE SET txid = excluded.txid, seq = excluded.seq, \
         update_time_us = excluded.update_time_us",
    )
    .bind(consumer)
    .bind(position.txid)
    .bind(position.seq)
    .bind(now_micros())
    .execute(uow.conn())
    .await?;
    uow.commit().await?;
    Ok(())
}

/// One consumer registered with retention: its name, its position, and when it last
/// acknowledged (microseconds since the epoch).
pub type Registration = (String, Position, i64);

/// Every registered consumer, the one holding back the most events first.
pub async fn consumers(db: &Db) -> AppResult<Vec<Registration>> {
    let rows = sqlx::query(
        "SELECT consumer, txid, seq, update_time_us FROM feed_consumers \
         ORDER BY txid, seq, consumer",
    )
    .fetch_all(db.pool())
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok((
                row.try_get("consumer")?,
                Position {
                    txid: row.try_get("txid")?,
                    seq: row.try_get("seq")?,
                },
                row.try_get("update_time_us")?,
            ))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(AppError::from)
}

/// Forgets `consumer`: retention no longer keeps events for it. NOT_FOUND if it is not
/// registered.
pub async fn forget(db: &Db, consumer: &str) -> AppResult<()> {
    let deleted = sqlx::query("DELETE FROM feed_consumers WHERE consumer = $1")
        .bind(consumer)
        .execute(db.write_pool())
        .await?
        .rows_affected();
    if deleted == 0 {
        return Err(AppError::not_found(format!(
            "consumer {consumer:?} (none such is registered with this feed)"
        )));
    }
    tracing::info!(
        consumer,
        "a feed consumer was forgotten; retention no longer keeps events for it"
    );
    Ok(())
}

/// What one run deleted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Events deleted.
    pub deleted: u64,
    /// The position deleted through, if anything was.
    pub through: Option<Position>,
    /// Consumers that had not handled events the hard cap deleted, with their positions.
    pub overrun: Vec<(String, Position)>,
}

/// Runs retention on `db` every `options.every` until `shutdown`.
pub async fn run(
    db: Db,
    options: RetentionOptions,
    service: &'static str,
    shutdown: CancellationToken,
) {
    let mut interval = tokio::time::interval(options.every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let oldest_age = crate::wire::metrics::meter()
        .f64_gauge("agilepm.outbox.oldest_age")
        .with_unit("s")
        .with_description(
            "Age of the oldest event the outbox keeps: past the retention horizon, a \
             registered consumer is holding events back (or retention fails)",
        )
        .build();
    let labels = [opentelemetry::KeyValue::new("service", service)];
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let now_us = now_micros();
        match prune(&db, &options, now_us).await {
            Ok(pruned) => {
                for (consumer, position) in &pruned.overrun {
                    tracing::error!(
                        service,
                        consumer,
                        consumer_position = ?position,
                        deleted_through = ?pruned.through,
                        max_events = options.max_events,
                        "the outbox exceeded its hard cap: events this consumer had not handled were deleted; it will be refused (OUT_OF_RANGE) when it resubscribes"
                    );
                }
                if pruned.deleted > 0 {
                    tracing::info!(service, deleted = pruned.deleted, through = ?pruned.through, "outbox retention deleted old events");
                }
                match oldest_events(&db, db.engine(), 1).await {
                    Ok(oldest) => {
                        let age_us = oldest.first().map_or(0, |(_, occurred)| now_us - occurred);
                        oldest_age.record(age_us.max(0) as f64 / 1e6, &labels);
                    }
                    Err(error) => {
                        tracing::warn!(service, %error, "reading the oldest outbox event failed")
                    }
                }
            }
            // Retried at the next run; the outbox only grows meanwhile.
            Err(error) => {
                tracing::warn!(service, %error, "outbox retention failed; retrying at the next run")
            }
        }
    }
}

/// One run at time `now_us`: deletes, oldest first, the events that are older than the
/// horizon and handled by every registered consumer, or beyond the hard cap.
pub async fn prune(db: &Db, options: &RetentionOptions, now_us: i64) -> AppResult<Pruned> {
    let engine = db.engine();
    let Some((head, _)) = crate::events::feed::OutboxReader::settled_head(db).await? else {
        return Ok(Pruned::default());
    };
    let consumers: Vec<(String, Position)> = consumers(db)
        .await?
        .into_iter()
        .map(|(consumer, position, _)| (consumer, position))
        .collect();
    let handled_by_all = consumers
        .first()
        .map_or(head, |(_, position)| (*position).min(head));
    let cutoff_us = now_us - i64::try_from(options.keep_for.as_micros()).unwrap_or(i64::MAX);
    // Sequence numbers are shared by every writer and never reused, so the span between
    // the head and the oldest kept bounds the events kept from above.
    let cap = i64::try_from(options.max_events).unwrap_or(i64::MAX);
    let over_cap_through = head.seq.saturating_sub(cap);

    let mut pruned = Pruned::default();
    for _ in 0..CHUNKS_PER_RUN {
        let oldest = oldest_events(db, engine, CHUNK).await?;
        // The longest prefix of the oldest events that may go.
        let mut through = None;
        for (position, occur_time_us) in &oldest {
            let expired = *occur_time_us < cutoff_us && *position <= handled_by_all;
            let over_cap = position.seq <= over_cap_through;
            if *position > head || !(expired || over_cap) {
                break;
            }
            through = Some(*position);
        }
        let Some(through) = through else { break };
        let deleted = delete_through(db, engine, through).await?;
        pruned.deleted += deleted;
        pruned.through = Some(through);
        if oldest.last().is_none_or(|(last, _)| *last != through) || (oldest.len() as i64) < CHUNK {
            break;
        }
    }
    if let Some(through) = pruned.through {
        pruned.overrun = consumers
            .into_iter()
            .filter(|(_, position)| *position < through)
            .collect();
    }
    Ok(pruned)
}

/// The oldest `limit` events' positions and times, oldest first.
async fn oldest_events(
    db: &Db,
    engine: Engine,
    limit: i64,
) -> Result<Vec<(Position, i64)>, sqlx::Error> {
    let sql = match engine {
        Engine::Sqlite => {
            "SELECT 0 AS txid, position AS seq, occur_time_us FROM outbox ORDER BY position LIMIT $1"
        }
        Engine::Postgres => {
            "SELECT txid, seq, occur_time_us FROM outbox ORDER BY txid, seq LIMIT $1"
        }
    };
    sqlx::query(sql)
        .bind(limit)
        .fetch_all(db.pool())
        .await?
        .into_iter()
        .map(|row| {
            Ok((
                Position {
                    txid: row.try_get("txid")?,
                    seq: row.try_get("seq")?,
                },
                row.try_get("occur_time_us")?,
            ))
        })
        .collect()
}

/// Deletes every event through `through` and records it, in one transaction.
async fn delete_through(db: &Db, engine: Engine, through: Position) -> Result<u64, sqlx::Error> {
    let mut uow = db.begin().await?;
    // The mark first: a reader that checks it after its read sees it no later than the
    // rows go.
    sqlx::query(
        "INSERT INTO feed_retention (singleton, txid, seq) VALUES (1, $1, $2) \
         ON CONFLICT (singleton) DO UPDATE SET txid = excluded.txid, seq = excluded.seq",
    )
    .bind(through.txid)
    .bind(through.seq)
    .execute(uow.conn())
    .await?;
    let deleted = match engine {
        Engine::Sqlite => {
            sqlx::query("DELETE FROM outbox WHERE position <= $1")
                .bind(through.seq)
                .execute(uow.conn())
                .await?
        }
        Engine::Postgres => {
            sqlx::query("DELETE FROM outbox WHERE (txid, seq) <= ($1, $2)")
                .bind(through.txid)
                .bind(through.seq)
                .execute(uow.conn())
                .await?
        }
    };
    uow.commit().await?;
    Ok(deleted.rows_affected())
}
