//! Reading the outbox in feed order without ever skipping an event.
//!
//! # Why no event is skipped
//!
//! **SQLite** admits one writer at a time, and `AUTOINCREMENT` positions are assigned
//! inside that writer's transaction, so positions commit in increasing order: once a
//! reader sees position N, every position below N is already visible. `position > cursor`
//! is therefore gap-free.
//!
//! **PostgreSQL** assigns sequence values at insert time but makes rows visible at
//! commit time, so transaction A may take seq 10, transaction B seq 11, and B commit
//! first. A reader using `seq > cursor` would deliver 11, move its cursor past 10, and
//! never see A's event. We instead record each row's writing transaction id (`txid`) and
//! read in `(txid, seq)` order **only below a horizon** computed from the reading
//! statement's snapshot: the lowest transaction still running at the snapshot that may
//! belong to this database, or the snapshot's xmax when none does (`horizon!`). Every
//! transaction of this database below the horizon has finished, so all its rows are
//! visible now and none can appear later; every one still running, or not yet started,
//! has an id at or above it. So once we deliver
//! `(txid, seq)` with `txid` below the horizon, no row that becomes visible later can
//! sort before it. The price: an event becomes readable only when every older writing
//! transaction that may be this database's has finished — a long-running writer delays
//! the feed (never reorders or loses it).
//!
//! The plain snapshot xmin would do too, but it is cluster-wide: under load some
//! transaction of another service's database is nearly always running, and every event
//! would wait for it. The horizon leaves out transactions that `pg_stat_activity` shows
//! on a backend of another database. What it cannot place holds it back — including a
//! transaction that has just ended and whose end nobody announces here — so a read that
//! finds committed but unsettled rows says so ([`Read::unsettled`]) and the feed reads
//! again within milliseconds instead of waiting for this database's next commit.

use crate::events::feed::Position;
use crate::storage::db::{Db, Engine};
use sqlx::Row;

/// One outbox row.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Its place in the feed.
    pub position: Position,
    /// Stable event id (UUID).
    pub event_id: String,
    /// Fully qualified payload message name.
    pub event_type: String,
    /// Kind of aggregate.
    pub aggregate_type: String,
    /// Aggregate id.
    pub aggregate_id: String,
    /// Tenant.
    pub tenant_id: String,
    /// When it happened (µs since the epoch).
    pub occur_time_us: i64,
    /// Protobuf-encoded payload.
    pub payload: Vec<u8>,
    /// Who acted.
    pub actor: String,
    /// The `traceparent` of the request that wrote it (empty if none).
    pub trace_parent: String,
}

/// What one read of the outbox found.
#[derive(Debug, Default)]
pub struct Read {
    /// Events safe to deliver, in feed order.
    pub events: Vec<StoredEvent>,
    /// The read hit its limit: more may follow at once.
    pub full: bool,
    /// PostgreSQL: committed events follow that are not safe to deliver yet (an older
    /// transaction is still running). Read again soon: that transaction's end may be
    /// announced to nobody.
    pub unsettled: bool,
}

/// Connections the event feed reads the outbox with, in a pool of their own: one for the
/// process's tail reader, the other shared by subscribers catching up from old positions
/// (and `GetFeedHead`). However many subscribe, they cannot take a connection a write
/// needs.
pub const FEED_READ_CONNECTIONS: u32 = 2;

/// Reads one database's outbox, on connections of its own.
#[derive(Clone, Debug)]
pub struct OutboxReader {
    db: Db,
    pool: sqlx::AnyPool,
    feed_id: String,
}

const READ_SQLITE: &str = "SELECT 0 AS txid, position AS seq, event_id, event_type, aggregate_type, \
     aggregate_id, tenant_id, occur_time_us, payload, actor, trace_parent FROM outbox \
     WHERE position > $1 ORDER BY position LIMIT $2";

/// [`READ_SQLITE`] of one tenant's events (the `outbox_tenant_head` index).
const READ_SQLITE_TENANT: &str = "SELECT 0 AS txid, position AS seq, event_id, event_type, \
     aggregate_type, aggregate_id, tenant_id, occur_time_us, payload, actor, trace_parent FROM outbox \
     WHERE tenant_id = $1 AND position > $2 ORDER BY position LIMIT $3";

/// The settle horizon as a PostgreSQL expression: every outbox row written by a
/// transaction below it is visible to the statement's snapshot, and no row can appear
/// below it later.
///
/// The lowest transaction still running at the snapshot (its `xip` list) that is not
/// proven to belong to another database, or the snapshot's `xmax` when there is none:
/// every transaction below `xmax` that is not running has finished, and every later one
/// gets an id at or above `xmax`. The proof is `pg_stat_activity` showing the running
/// transaction id on a backend connected to another database — conclusive, since a
/// transaction id is never reused while running and a backend never changes database.
/// Anything unproven holds the horizon back: a transaction that ended since the snapshot
/// (the next read passes it), a prepared transaction, a backend the role may not see.
///
/// Written out in each statement, not as a SQL function: PostgreSQL plans a function's
/// body anew on every call (measured 0.5 ms), while a prepared statement keeps its plan.
/// It reads `pg_stat_activity` only when some transaction is running.
macro_rules! horizon {
    () => {
        "coalesce(\
           (SELECT min(running::text::bigint) \
              FROM pg_snapshot_xip(pg_current_snapshot()) AS running \
             WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity AS backend \
                                WHERE backend.backend_xid = xid(running) \
                                  AND backend.datname <> current_database())), \
           pg_snapshot_xmax(pg_current_snapshot())::text::bigint)"
    };
}

/// Reads on past the horizon and marks each row: delivery stops at the first row that
/// is not `settled` (the settled rows are a prefix, ordered by `txid` first), and seeing
/// such a row tells the caller that committed events are waiting for an older
/// transaction to end, which no commit of this database may announce. The scalar
/// subquery evaluates the horizon once per read, not once per row.
const READ_POSTGRES: &str = concat!(
    "SELECT txid, seq, event_id, event_type, aggregate_type, aggregate_id, tenant_id, \
     occur_time_us, payload, actor, trace_parent, txid < (SELECT ",
    horizon!(),
    ") AS settled FROM outbox WHERE (txid, seq) > ($1, $2) ORDER BY txid, seq LIMIT $3"
);

/// [`READ_POSTGRES`] of one tenant's events (the `outbox_tenant_head` index). The
/// horizon is the same whatever rows are read, so the read is as gap-safe.
const READ_POSTGRES_TENANT: &str = concat!(
    "SELECT txid, seq, event_id, event_type, aggregate_type, aggregate_id, tenant_id, \
     occur_time_us, payload, actor, trace_parent, txid < (SELECT ",
    horizon!(),
    ") AS settled FROM outbox WHERE tenant_id = $1 AND (txid, seq) > ($2, $3) \
     ORDER BY txid, seq LIMIT $4"
);

const HEAD_SQLITE: &str =
    "SELECT 0 AS txid, position AS seq, occur_time_us FROM outbox ORDER BY position DESC LIMIT 1";

const HEAD_POSTGRES: &str = concat!(
    "SELECT txid, seq, occur_time_us FROM outbox WHERE txid < (SELECT ",
    horizon!(),
    ") ORDER BY txid DESC, seq DESC LIMIT 1"
);

const TENANT_HEAD_SQLITE: &str = "SELECT 0 AS txid, position AS seq, occur_time_us FROM outbox \
     WHERE tenant_id = $1 ORDER BY position DESC LIMIT 1";

const TENANT_HEAD_POSTGRES: &str = concat!(
    "SELECT txid, seq, occur_time_us FROM outbox WHERE tenant_id = $1 AND txid < (SELECT ",
    horizon!(),
    ") ORDER BY txid DESC, seq DESC LIMIT 1"
);

impl OutboxReader {
    /// A reader for `db`'s outbox, opening its [`FEED_READ_CONNECTIONS`]; loads the
    /// database's feed id.
    pub async fn new(db: Db) -> Result<OutboxReader, sqlx::Error> {
        let pool = db.open_separate_pool(FEED_READ_CONNECTIONS).await?;
        let feed_id: String =
            sqlx::query_scalar("SELECT feed_id FROM feed_identity WHERE singleton = 1")
                .fetch_one(&pool)
                .await?;
        Ok(OutboxReader { db, pool, feed_id })
    }

    /// Closes the reader's connections.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The database's feed id, embedded in every position it issues.
    pub fn feed_id(&self) -> &str {
        &self.feed_id
    }

    /// The reader's own connections.
    pub(crate) fn pool(&self) -> &sqlx::AnyPool {
        &self.pool
    }

    /// The database this reader reads.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Up to `limit` events after `after`, in feed order. Borrows one of the feed's
    /// connections for the one query only.
    pub async fn read_after(&self, after: Position, limit: u32) -> Result<Read, sqlx::Error> {
        self.read_after_of(None, after, limit).await
    }

    /// [`OutboxReader::read_after`] of `tenant`'s events only, when given: a read that is
    /// neither full nor unsettled has delivered every event of the tenant up to any
    /// position the feed had reached before it began.
    pub async fn read_after_of(
        &self,
        tenant: Option<&str>,
        after: Position,
        limit: u32,
    ) -> Result<Read, sqlx::Error> {
        let query = match (self.db.engine(), tenant) {
            (Engine::Sqlite, None) => sqlx::query(READ_SQLITE).bind(after.seq),
            (Engine::Postgres, None) => sqlx::query(READ_POSTGRES).bind(after.txid).bind(after.seq),
            (Engine::Sqlite, Some(tenant)) => sqlx::query(READ_SQLITE_TENANT)
                .bind(tenant.to_owned())
                .bind(after.seq),
            (Engine::Postgres, Some(tenant)) => sqlx::query(READ_POSTGRES_TENANT)
                .bind(tenant.to_owned())
                .bind(after.txid)
                .bind(after.seq),
        };
        let rows = query.bind(i64::from(limit)).fetch_all(&self.pool).await?;
        let mut read = Read {
            full: rows.len() as u64 == u64::from(limit),
            ..Read::default()
        };
        for row in rows {
            if self.db.engine() == Engine::Postgres && !row.try_get::<bool, _>("settled")? {
                read.unsettled = true;
                read.full = false;
                break;
            }
            read.events.push(StoredEvent {
                position: Position {
                    txid: row.try_get("txid")?,
                    seq: row.try_get("seq")?,
                },
                event_id: row.try_get("event_id")?,
                event_type: row.try_get("event_type")?,
                aggregate_type: row.try_get("aggregate_type")?,
                aggregate_id: row.try_get("aggregate_id")?,
                tenant_id: row.try_get("tenant_id")?,
                occur_time_us: row.try_get("occur_time_us")?,
                payload: row.try_get("payload")?,
                actor: row.try_get("actor")?,
                trace_parent: row.try_get("trace_parent")?,
            });
        }
        Ok(read)
    }

    /// The newest readable event's position and time, or `None` for an empty feed; of
    /// `tenant`'s events only, when given.
    pub async fn head(&self, tenant: Option<&str>) -> Result<Option<(Position, i64)>, sqlx::Error> {
        read_head(self.db.engine(), &self.pool, tenant).await
    }

    /// The newest readable event of `db`'s outbox, read on `db`'s own pool: for
    /// background work that has no reader (retention).
    pub async fn settled_head(db: &Db) -> Result<Option<(Position, i64)>, sqlx::Error> {
        read_head(db.engine(), db.pool(), None).await
    }
}

async fn read_head(
    engine: Engine,
    pool: &sqlx::AnyPool,
    tenant: Option<&str>,
) -> Result<Option<(Position, i64)>, sqlx::Error> {
    let query = match (engine, tenant) {
        (Engine::Sqlite, None) => sqlx::query(HEAD_SQLITE),
        (Engine::Postgres, None) => sqlx::query(HEAD_POSTGRES),
        (Engine::Sqlite, Some(tenant)) => sqlx::query(TENANT_HEAD_SQLITE).bind(tenant.to_owned()),
        (Engine::Postgres, Some(tenant)) => {
            sqlx::query(TENANT_HEAD_POSTGRES).bind(tenant.to_owned())
        }
    };
    let row = query.fetch_optional(pool).await?;
    row.map(|row| {
        Ok((
            Position {
                txid: row.try_get("txid")?,
                seq: row.try_get("seq")?,
            },
            row.try_get("occur_time_us")?,
        ))
    })
    .transpose()
}
