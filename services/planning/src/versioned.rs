//! The one way planning changes a stored aggregate (a sprint, a release, a team member):
//! read it, decide the change, write it back guarded by the version read, with its event
//! and anything that must happen before the commit, in one transaction. A change that
//! changes nothing writes nothing; a lost race is retried on fresh state unless the caller
//! named the version it expects.

use std::future::Future;

use agilepm_platform::domain::error::{AppError, AppResult};
use agilepm_platform::domain::time::now_micros;
use agilepm_platform::storage::db::{Db, UnitOfWork};
use agilepm_platform::storage::optimistic::{Attempt, check_version, retry_lost_races};
use agilepm_platform::storage::outbox::{self, NewEvent};
use sqlx::AnyConnection;

/// An aggregate stored with an optimistic concurrency version.
pub trait Versioned: Clone + PartialEq + Send + Sync + Sized {
    /// What it is called in messages, e.g. "sprint".
    const KIND: &'static str;

    /// Its version.
    fn version(&self) -> i64;

    /// Makes it `version`, last changed at `now_us`.
    fn set_version(&mut self, version: i64, now_us: i64);

    /// Reads `id` of `tenant`.
    fn load(
        conn: &mut AnyConnection,
        tenant: &str,
        id: &str,
    ) -> impl Future<Output = AppResult<Option<Self>>> + Send;

    /// Writes it over the row read at `read_version`; false if that row has changed since.
    fn store(
        &self,
        uow: &mut UnitOfWork,
        read_version: i64,
    ) -> impl Future<Output = AppResult<bool>> + Send;
}

/// Applies `decide` to `A` `id` of `tenant` with the event `event` builds.
pub async fn change<A: Versioned>(
    db: &Db,
    tenant: &str,
    id: &str,
    expected: Option<i64>,
    decide: impl Fn(&A) -> AppResult<A>,
    event: for<'a> fn(&'a A) -> NewEvent<'a>,
) -> AppResult<A> {
    change_then(db, tenant, id, expected, decide, event, |_, _| async {
        Ok(())
    })
    .await
}

/// Like [`change`], running `before_commit` (given the state before and after) once the
/// change is written and before it commits: a refusal there changes nothing.
pub async fn change_then<A, Fut>(
    db: &Db,
    tenant: &str,
    id: &str,
    expected: Option<i64>,
    decide: impl Fn(&A) -> AppResult<A>,
    event: for<'a> fn(&'a A) -> NewEvent<'a>,
    before_commit: impl Fn(&A, &A) -> Fut,
) -> AppResult<A>
where
    A: Versioned,
    Fut: Future<Output = AppResult<()>>,
{
    let what = format!("{} {id}", A::KIND);
    retry_lost_races(&what, expected, || async {
        let mut uow = db.begin().await?;
        let before = A::load(uow.conn(), tenant, id)
            .await?
            .ok_or_else(|| AppError::not_found(&what))?;
        check_version(&what, expected, before.version())?;
        let mut after = decide(&before)?;
        if after == before {
            return Ok(Attempt::Done(before));
        }
        after.set_version(before.version() + 1, now_micros());
        if !after.store(&mut uow, before.version()).await? {
            return Ok(Attempt::LostRace);
        }
        outbox::append_all(&mut uow, &[event(&after)]).await?;
        before_commit(&before, &after).await?;
        uow.commit().await?;
        Ok(Attempt::Done(after))
    })
    .await
}
