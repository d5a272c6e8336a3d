//! The reconcile fast path under group commit. Mid-sprint almost every basis the
//! coordinator sends has hours left and only moves an item's revision guard
//! ([`store::advance_revisions_if_nothing_changes`]); the coordinator sends many at once,
//! and applying those that arrive together in one statement pays one commit (on
//! PostgreSQL one WAL flush) for all of them.

use std::collections::HashSet;

use agilepm_platform::db::Db;
use agilepm_platform::error::AppResult;
use agilepm_platform::group_commit::{BatchWrite, GroupCommit};
use agilepm_proto::backlog::v1::BacklogItem;

use crate::store::{self, Basis};

/// Most bases in one statement.
const MAX_BATCH: usize = 256;

/// A handle on the writer applying fast-path bases.
pub type FastReconciler = GroupCommit<FastPath>;

/// Starts the fast-path writer on `db`.
pub fn start(db: Db) -> FastReconciler {
    GroupCommit::start(FastPath { db }, MAX_BATCH)
}

/// Applies batches of fast-path bases.
pub struct FastPath {
    db: Db,
}

impl BatchWrite for FastPath {
    type Request = Basis;
    /// The item with its guard moved, or `None`: the basis needs the full path.
    type Response = Option<BacklogItem>;

    async fn apply(&self, bases: &[Basis]) -> AppResult<Vec<AppResult<Option<BacklogItem>>>> {
        // One statement may change a row once: the newest basis of each item goes in,
        // any other basis of that item in this batch takes the full path (where it is
        // stale, or a duplicate).
        let mut chosen: Vec<&Basis> = Vec::new();
        for basis in bases.iter().filter(|b| b.hours > 0) {
            match chosen.iter_mut().find(|c| c.id == basis.id) {
                Some(c) if c.revision < basis.revision => *c = basis,
                Some(_) => {}
                None => chosen.push(basis),
            }
        }
        let mut moved = store::advance_revisions_if_nothing_changes(&self.db, &chosen).await?;
        let mut answered: HashSet<&str> = HashSet::new();
        Ok(bases
            .iter()
            .map(|basis| {
                let applied = moved.get(&basis.id).is_some_and(|item| {
                    item.reconciled_task_revision == basis.revision
                        && answered.insert(basis.id.as_str())
                });
                Ok(if applied {
                    // Only one basis per item can be the applied one.
                    moved.remove(&basis.id)
                } else {
                    None
                })
            })
            .collect())
    }
}
