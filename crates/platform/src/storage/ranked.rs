//! A list stored in a table and ordered by [`rank`](crate::domain::rank) keys within a
//! tenant's scope: a product backlog, a product's use cases (scoped by `product_id`, keys
//! in `rank`), a sprint's items (scoped by `sprint_id`, keys in `sprint_rank`). Every such
//! table has `id` and `tenant_id` columns and a unique index on `(tenant_id, scope, key)`:
//! a list never reaches into another tenant's rows, even under a scope id that tenant
//! also uses. A row outside every list of the table keeps a NULL key.
//!
//! Placing a row writes that row only, except when repeated moves into one gap have
//! grown the key past [`MAX_KEY_LEN`](crate::domain::rank::MAX_KEY_LEN): then the whole list is
//! respaced once, in order, inside the caller's transaction.

use sqlx::AnyConnection;

use crate::domain::rank;

/// The statements of one ranked table, built at compile time by [`ranked_list!`]
/// (so no SQL is assembled at run time).
pub struct RankedList {
    #[doc(hidden)]
    pub table: &'static str,
    #[doc(hidden)]
    pub last: &'static str,
    #[doc(hidden)]
    pub before: &'static str,
    #[doc(hidden)]
    pub after: &'static str,
    #[doc(hidden)]
    pub taken: &'static str,
    #[doc(hidden)]
    pub ids_in_order: &'static str,
    #[doc(hidden)]
    pub park_all: &'static str,
    #[doc(hidden)]
    pub set_rank: &'static str,
}

/// The [`RankedList`] of a table: `ranked_list!("use_cases")` for lists scoped by
/// `product_id` with keys in `rank`, or `ranked_list!("backlog_items", "sprint_id",
/// "sprint_rank")` to name the scope and key columns.
#[macro_export]
macro_rules! ranked_list {
    ($table:literal) => {
        $crate::ranked_list!($table, "product_id", "rank")
    };
    ($table:literal, $scope:literal, $key:literal) => {
        $crate::storage::ranked::RankedList {
            table: $table,
            last: concat!(
                "SELECT ",
                $key,
                " FROM ",
                $table,
                " WHERE tenant_id = $1 AND ",
                $scope,
                " = $2 ORDER BY ",
                $key,
                " DESC LIMIT 1"
            ),
            before: concat!(
                "SELECT ",
                $key,
                " FROM ",
                $table,
                " WHERE tenant_id = $1 AND ",
                $scope,
                " = $2 AND ",
                $key,
                " < $3 AND id <> $4 \
                 ORDER BY ",
                $key,
                " DESC LIMIT 1"
            ),
            after: concat!(
                "SELECT ",
                $key,
                " FROM ",
                $table,
                " WHERE tenant_id = $1 AND ",
                $scope,
                " = $2 AND ",
                $key,
                " > $3 AND id <> $4 \
                 ORDER BY ",
                $key,
                " LIMIT 1"
            ),
            taken: concat!(
                "SELECT COUNT(*) FROM ",
                $table,
                " WHERE tenant_id = $1 AND ",
                $scope,
                " = $2 AND ",
                $key,
                " = $3"
            ),
            ids_in_order: concat!(
                "SELECT id FROM ",
                $table,
                " WHERE tenant_id = $1 AND ",
                $scope,
                " = $2 ORDER BY ",
                $key
            ),
            // Temporary keys sort after every real key ('~' > 'z'), so the unique index
            // never sees a collision while the list is rewritten.
            park_all: concat!(
                "UPDATE ",
                $table,
                " SET ",
                $key,
                " = '~' || id WHERE tenant_id = $1 AND ",
                $scope,
                " = $2"
            ),
            set_rank: concat!("UPDATE ", $table, " SET ", $key, " = $1 WHERE id = $2"),
        }
    };
}

/// Where a row goes, relative to another row of the same list.
#[derive(Debug, Clone, Copy)]
pub struct Anchor<'a> {
    /// The other row's id.
    pub id: &'a str,
    /// The other row's current rank.
    pub rank: &'a str,
    /// Directly before it (`true`) or directly after it.
    pub before: bool,
}

impl RankedList {
    /// The key of a row appended at the end of `tenant_id`'s list `scope_id`.
    pub async fn key_at_end(
        &self,
        conn: &mut AnyConnection,
        tenant_id: &str,
        scope_id: &str,
    ) -> Result<String, sqlx::Error> {
        let last: Option<String> = sqlx::query_scalar(self.last)
            .bind(tenant_id)
            .bind(scope_id)
            .fetch_optional(conn)
            .await?;
        Ok(rank::between(last.as_deref(), None))
    }

    /// `preferred` if no row of `tenant_id`'s list `scope_id` holds that key yet, else the
    /// key at the end of the list.
    pub async fn key_preferring(
        &self,
        conn: &mut AnyConnection,
        tenant_id: &str,
        scope_id: &str,
        preferred: &str,
    ) -> Result<String, sqlx::Error> {
        let taken: i64 = sqlx::query_scalar(self.taken)
            .bind(tenant_id)
            .bind(scope_id)
            .bind(preferred)
            .fetch_one(&mut *conn)
            .await?;
        if taken == 0 {
            Ok(preferred.to_owned())
        } else {
            self.key_at_end(conn, tenant_id, scope_id).await
        }
    }

    /// The key that puts row `moving_id` (now at `moving_key`) next to `anchor`. Run it
    /// in the write transaction that then stores the key on the row: if the list had to
    /// be respaced, the returned key is the one the respacing already gave the row. A row
    /// already in that place keeps its key, so a repeated move changes nothing.
    pub async fn key_next_to(
        &self,
        conn: &mut AnyConnection,
        tenant_id: &str,
        scope_id: &str,
        (moving_id, moving_key): (&str, &str),
        anchor: Anchor<'_>,
    ) -> Result<String, sqlx::Error> {
        let sql = if anchor.before {
            self.before
        } else {
            self.after
        };
        let neighbour: Option<String> = sqlx::query_scalar(sql)
            .bind(tenant_id)
            .bind(scope_id)
            .bind(anchor.rank)
            .bind(moving_id)
            .fetch_optional(&mut *conn)
            .await?;
        let (low, high) = if anchor.before {
            (neighbour.as_deref(), Some(anchor.rank))
        } else {
            (Some(anchor.rank), neighbour.as_deref())
        };
        let already_there = low.is_none_or(|low| low < moving_key)
            && high.is_none_or(|high| moving_key < high)
            && moving_id != anchor.id;
        if already_there {
            return Ok(moving_key.to_owned());
        }
        let key = rank::between(low, high);
        if key.len() <= rank::MAX_KEY_LEN {
            return Ok(key);
        }
        // Too many moves into one gap: respace the whole list with the row in place.
        let mut order: Vec<String> = sqlx::query_scalar(self.ids_in_order)
            .bind(tenant_id)
            .bind(scope_id)
            .fetch_all(&mut *conn)
            .await?;
        order.retain(|other| other != moving_id);
        let at = order
            .iter()
            .position(|other| other == anchor.id)
            .unwrap_or(order.len());
        order.insert(
            if anchor.before { at } else { at + 1 },
            moving_id.to_owned(),
        );
        sqlx::query(self.park_all)
            .bind(tenant_id)
            .bind(scope_id)
            .execute(&mut *conn)
            .await?;
        let mut moved_key = String::new();
        for (id, key) in order.iter().zip(rank::spread(order.len())) {
            sqlx::query(self.set_rank)
                .bind(&key)
                .bind(id)
                .execute(&mut *conn)
                .await?;
            if id == moving_id {
                moved_key = key;
            }
        }
        tracing::info!(table = self.table, %scope_id, rows = order.len(), "respaced rank keys");
        Ok(moved_key)
    }
}
