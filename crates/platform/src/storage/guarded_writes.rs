//! Several writes applied all or nothing, each guarded by the number of rows it must
//! touch: a compare-and-set over many rows that holds no lock between round trips.
//!
//! A batch writer reads its rows without locking them, decides in memory, and then
//! writes with guards (`WHERE version = <read version>`): if another writer changed a
//! row in between, that part touches fewer rows than it must, nothing is written, and the
//! caller gets [`AppError::Aborted`] to read again.
//!
//! On PostgreSQL all parts become one statement: data-modifying `WITH` parts and a final
//! check that raises a serialization failure (migration 0003) when a part fell short. One
//! round trip that commits on its own, where a transaction would take one per part plus
//! `BEGIN` and `COMMIT`; under load each round trip waits for the database process to be
//! scheduled, so the count of round trips is what sets a batch's time. SQLite's `WITH`
//! cannot hold an `UPDATE`, so there the parts run in one transaction on the single write
//! connection and are counted before the commit.

use crate::domain::error::{AppError, AppResult};
use crate::storage::db::{Db, Engine, UnitOfWork};
use crate::storage::outbox::{self, NewEvent};
use crate::storage::statement::Statement;

/// One write: an `INSERT`, `UPDATE` or `DELETE` without `RETURNING`, built into the
/// statement it is given, and how many rows it must touch (`None`: any number).
pub struct GuardedWrite<'a> {
    /// Appends the write's SQL and binds its values.
    pub build: Box<dyn Fn(&mut Statement) + Send + Sync + 'a>,
    /// Rows it must touch for the whole to stand.
    pub rows: Option<u64>,
}

impl GuardedWrite<'_> {
    /// Runs this write alone inside `uow` and returns the rows it touched, for a caller
    /// that writes it as one statement of its own transaction.
    pub async fn execute(&self, uow: &mut UnitOfWork) -> AppResult<u64> {
        let mut statement = Statement::new(uow.engine());
        (self.build)(&mut statement);
        Ok(statement
            .query()?
            .execute(uow.conn())
            .await?
            .rows_affected())
    }
}

/// Applies `writes` and appends `events` to the outbox, all or nothing. `Aborted` when a
/// guard failed (then nothing was written); other errors as the database reports them.
pub async fn apply(db: &Db, writes: &[GuardedWrite<'_>], events: &[NewEvent<'_>]) -> AppResult<()> {
    if writes.is_empty() && events.is_empty() {
        return Ok(());
    }
    match db.engine() {
        Engine::Postgres => {
            apply_as_one_statement(db, writes, events).await?;
            if !events.is_empty() {
                db.notifier().notify();
            }
        }
        // The unit of work's commit wakes the feed's subscribers.
        Engine::Sqlite => apply_in_transaction(db, writes, events).await?,
    }
    Ok(())
}

async fn apply_as_one_statement(
    db: &Db,
    writes: &[GuardedWrite<'_>],
    events: &[NewEvent<'_>],
) -> AppResult<()> {
    let mut statement = Statement::new(db.engine());
    for (i, write) in writes.iter().enumerate() {
        statement.sql(if i == 0 { "WITH " } else { ", " });
        statement.sql(&format!("w{i} AS ("));
        (write.build)(&mut statement);
        statement.sql(" RETURNING 1)");
    }
    if !events.is_empty() {
        statement.sql(if writes.is_empty() { "WITH " } else { ", " });
        statement.sql("events AS (");
        outbox::insert_events(&mut statement, events);
        statement.sql(" RETURNING 1)");
    }
    // Each part's count is read by the final SELECT, which raises unless every guarded
    // part touched exactly its rows. A data-modifying part runs to completion whether read
    // or not, and the raise undoes all of them.
    statement.sql(" SELECT CASE WHEN TRUE");
    for (i, write) in writes.iter().enumerate() {
        if let Some(rows) = write.rows {
            statement.sql(&format!(" AND (SELECT count(*) FROM w{i}) = "));
            statement.placeholder().bind(rows as i64);
        }
    }
    statement.sql(" THEN 0 ELSE agilepm_write_conflict() END AS conflict");
    statement.query()?.execute(db.pool()).await?;
    Ok(())
}

async fn apply_in_transaction(
    db: &Db,
    writes: &[GuardedWrite<'_>],
    events: &[NewEvent<'_>],
) -> AppResult<()> {
    let mut uow = db.begin().await?;
    for write in writes {
        let touched = write.execute(&mut uow).await?;
        if let Some(rows) = write.rows
            && touched != rows
        {
            // Dropping the unit of work rolls it back.
            return Err(AppError::Aborted(format!(
                "rows changed since they were read: a write touched {touched} of {rows}"
            )));
        }
    }
    outbox::append_all(&mut uow, events).await?;
    uow.commit().await?;
    Ok(())
}
